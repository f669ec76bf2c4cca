"""Collectives over DDP ranks in slices: what one call moves onto a device stays bounded (a
thousand classes' counts or NMF samples would not fit on a GPU whole), the results do not
change. A stand-in strategy plays two ranks; the DDP tests run real processes."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from clustercam.callbacks import gather


class TwoRanks:
    """Rank 0 of two; rank 1 holds as many rows, this rank's + 1000 (indices included)."""

    root_device = torch.device("cpu")

    def __init__(self) -> None:
        self.moved: list[int] = []

    def reduce(self, t, reduce_op):
        assert reduce_op == "sum"
        self.moved.append(t.nbytes)
        return t + t

    def all_gather(self, t):
        self.moved.append(t.nbytes)
        return torch.stack([t, t if len(self.moved) == 1 else t + 1000])  # the first call: the ranks' sizes


def test_reduce_sum_moves_slices_of_at_most_the_budget_and_sums_them_all() -> None:
    trainer = SimpleNamespace(strategy=TwoRanks())
    counts = torch.arange(7 * 4 * 4, dtype=torch.int32).view(7, 4, 4)  # 7 classes of 4 x 4 counts (64 bytes each)
    mine = counts.clone()
    assert gather.reduce_sum(trainer, mine, max_bytes=150) is mine  # summed in place, no second copy
    assert torch.equal(mine, 2 * counts)
    assert trainer.strategy.moved == [128, 128, 128, 64]  # 2 classes a call (150 // 64), the rest last
    trainer.strategy.moved.clear()
    assert torch.equal(gather.reduce_sum(trainer, torch.tensor(5)), torch.tensor(10))  # a scalar: one call
    assert torch.equal(gather.reduce_sum(trainer, torch.zeros(0, 3)), torch.zeros(0, 3))


def test_gather_split_in_slices_gives_every_rank_row_in_index_order(monkeypatch) -> None:
    monkeypatch.setattr(gather, "CHUNK_BYTES", 2 * 3 * 4 * 4)  # 2 ranks x 3 rows of 4 float32 per call
    strategy = TwoRanks()
    trainer = SimpleNamespace(world_size=2, strategy=strategy)
    chunks = [{"idx": torch.tensor([5, 1]), "a": torch.arange(8.0).view(2, 4)},
              {"idx": torch.tensor([3, 7, 2]), "a": torch.arange(8.0, 20.0).view(3, 4)}]
    out = gather.gather_split(trainer, chunks)
    idx = torch.tensor([5, 1, 3, 7, 2])
    a = torch.arange(20.0).view(5, 4)
    order = torch.argsort(torch.cat([idx, idx + 1000]))
    assert torch.equal(out["idx"], torch.cat([idx, idx + 1000])[order])
    assert torch.equal(out["a"], torch.cat([a, a + 1000])[order])
    assert max(strategy.moved[1:]) <= gather.CHUNK_BYTES // 2  # the sizes, then slices of <= 3 rows
    assert len(strategy.moved) == 1 + 1 + 2  # sizes; idx (5 int64 rows: one call of 40 bytes); a in 2 slices
