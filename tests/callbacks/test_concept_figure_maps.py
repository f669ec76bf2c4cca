"""The concept callback keeps the per-image maps of the figure images only (bounded memory
on large folders), and draws them from the right images."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from clustercam.callbacks import concept_explain
from clustercam.callbacks.concept_explain import ConceptExplainCallback
from clustercam.callbacks.gather import keep_lowest
from clustercam.explain.concepts import run_concepts


def test_keep_lowest_keeps_the_k_lowest_indices_with_their_rows() -> None:
    kept = None
    for idx in ([5, 3, 9], [1, 7], [0]):
        t = torch.tensor(idx)
        kept = keep_lowest(kept, {"idx": t, "v": t * 10}, 2)
    assert kept["idx"].tolist() == [0, 1] and kept["v"].tolist() == [0, 10]
    everything = keep_lowest(keep_lowest(None, {"idx": torch.tensor([4, 2])}, None), {"idx": torch.tensor([1])}, None)
    assert everything["idx"].tolist() == [4, 2, 1]


def test_the_callback_keeps_and_draws_the_maps_of_the_first_images_only(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    c = 12
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(c, 3))
    module = SimpleNamespace(head=head, pooled_head=None, describe=lambda: {})
    trainer = SimpleNamespace(world_size=1, is_global_zero=True, datamodule=None, predicting=False,
                              loggers=[], logger=None, strategy=None)
    cb = ConceptExplainCallback(tmp_path, n_init=2, max_figures=3, fidelity=False)
    cb._reset()
    expected = {}
    for order in ([6, 2, 7], [0, 5, 4], [3, 1]):  # the images arrive out of index order
        idx = torch.tensor(order)
        a = torch.relu(torch.randn(len(order), c, 4, 4))
        y = torch.randint(0, 3, (len(order),))
        with torch.no_grad():
            logits = head(a)
            cb._process(trainer, module, {"activations": a, "logits": logits, "y": y, "idx": idx}, None)
            alone = run_concepts(head, a, y, settings=cb.settings, logits=logits)
        expected.update({int(i): (alone.maps[j], alone.sub_maps[j]) for j, i in enumerate(order)})
    assert cb._chunks[0].maps is None and cb._maps["idx"].tolist() == [0, 1, 2]
    drawn = {}
    monkeypatch.setattr(concept_explain, "concept_figure_set", lambda s, dm, data, *a, **k: drawn.update(vars(data)))
    with torch.no_grad():
        cb._finish(trainer, module, "test")
    assert drawn["idx"].tolist() == list(range(8)) and len(drawn["maps"]) == 3
    for row in range(3):  # the i-th figure image's maps are image i's, as one batch computed them
        torch.testing.assert_close(drawn["maps"][row], expected[row][0])
        torch.testing.assert_close(drawn["sub_maps"][row], expected[row][1])
