"""The per-image concept pipeline against a saved run of an earlier version of the code.

``reference/concept_batch.pt`` holds every field of the :class:`ConceptBatch` of a small
random batch (pooled + linear head, dropped channels, default steps: CGAP + CPHA,
sub-concepts, fidelity), made by the pipeline before it was reworked for speed (one
pass of the activation checks, shared rows, chunked metrics, vectorised sorts); any
speed-up must leave it unchanged. Integer fields (labels, counts, predictions) must
match exactly; scores to 1e-12 relative (float64) or 1e-6 (float32 maps): the bits were
identical on the machine that made the file, but BLAS kernels on other CPUs may round
differently. Regenerate (only for a deliberate change of results) with
``PYTHONPATH=src python tests/explain/test_concept_reference.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clustercam.explain.concepts import ConceptBatch, ConceptSettings, run_concepts
from clustercam.explain.concepts.image.ablation import PooledHead

REFERENCE = Path(__file__).parent / "reference" / "concept_batch.pt"


def _batch(threads: int) -> ConceptBatch:
    gen = torch.Generator().manual_seed(3)
    a = torch.relu(torch.randn(5, 64, 5, 5, generator=gen) - 0.4)
    a[:, ::9] = 0  # dropped channels: the ablations' group of channels in no concept
    linear = torch.nn.Linear(64, 7)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(7, 64, generator=gen))
        linear.bias.copy_(torch.randn(7, generator=gen))
    pool = lambda x: x.mean((2, 3))  # noqa: E731
    head = lambda x: linear(pool(x))  # noqa: E731
    settings = ConceptSettings(n_concepts=4, sub_concepts=2, n_init=3, control_repeats=4)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return run_concepts(head, a, torch.arange(5) % 7, settings=settings,
                                pooled_head=PooledHead(pool, linear))
    finally:
        torch.set_num_threads(before)


def _fields(batch: ConceptBatch) -> dict[str, object]:
    out: dict[str, object] = {k: v for k, v in batch.tensors().items() if k != "metrics/seconds"}
    out["degenerate"] = batch.degenerate
    out.update({f"concept_labels/{c.name}": v for c, v in (batch.concept_labels or {}).items()})
    return out


def test_the_pipeline_gives_the_saved_results_of_the_earlier_code() -> None:
    ref = torch.load(REFERENCE)
    for threads in (1, 2):
        got = _fields(_batch(threads))
        assert got.keys() == ref.keys()
        for key, want in ref.items():
            value = got[key]
            if not isinstance(want, torch.Tensor):
                assert value == want, key
            elif want.is_floating_point():
                tol = 1e-12 if want.dtype == torch.float64 else 1e-6
                torch.testing.assert_close(value, want, rtol=tol, atol=tol, equal_nan=True, msg=key)
            else:
                assert torch.equal(value, want), key


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    torch.save(_fields(_batch(1)), REFERENCE)
