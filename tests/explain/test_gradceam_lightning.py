"""grad_ceam inside a Lightning validation loop (gradients while the trainer evaluates)."""

import pytest
import torch
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from clustercam.explain.gradceam import grad_ceam
from clustercam.models.components.resnet_cae import ResNetCAE


class Explaining(LightningModule):
    def __init__(self):
        super().__init__()
        self.net = ResNetCAE((1, 16), filters=(4,), embedding_dim=3)
        self.mu = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
        self.results = []

    def validation_step(self, batch, batch_idx):
        res = grad_ceam(self.net.encoder, "features", batch[0], self.mu)
        self.results.append(res)


@pytest.mark.parametrize("inference_mode", [False, True])
def test_inside_a_validation_loop(inference_mode):
    torch.manual_seed(0)
    x = torch.randn(6, 1, 16)
    module = Explaining()
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      inference_mode=inference_mode)
    trainer.validate(module, DataLoader(TensorDataset(x), batch_size=3))
    got = torch.cat([r.channel_weights for r in module.results])
    expected = grad_ceam(module.net.encoder, "features", x, module.mu).channel_weights
    torch.testing.assert_close(got, expected)
    assert all(p.grad is None for p in module.parameters())
