"""The run-folder files of one Grad-CeAM explanation of a clustered split (the outputs contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clustercam.explain.gradceam import ClusterExplanation
from clustercam.outputs import contract
from clustercam.outputs.files import write_csv, write_json, write_npz


def write_cluster_explanation(out: Path, ex: ClusterExplanation, idx: Tensor, y: Tensor, clusters: Tensor,
                              x: Tensor) -> list[dict[str, Any]]:
    """Write one clustered split's Grad-CeAM files into the run folder ``out``.

    The cardinality table and summary, the assignments, the per-target summary and the
    members' heatmaps of ``ex``. ``idx`` / ``y`` / ``clusters``: dataset index, class label
    and cluster of each sample of the split; ``x``: its inputs (the members' rows are saved
    beside their maps). Returns the cardinality rows.
    """
    rows = ex.table.rows()
    write_csv(out / contract.CARDINALITY, rows, contract.CARDINALITY_COLUMNS)
    write_json(out / contract.CARDINALITY_SUMMARY, ex.summary)
    write_csv(out / contract.ASSIGNMENTS, ({"index": int(i), "label": int(t), "cluster": int(c)}
                                          for i, t, c in zip(idx, y, clusters)), contract.ASSIGNMENT_COLUMNS)
    if ex.by_mode:
        write_csv(out / contract.CARDINALITY_BY_MODE, ex.by_mode, contract.CARDINALITY_BY_MODE_COLUMNS)
    if ex.member_maps is not None:
        maps, sel = ex.member_maps, ex.member_index
        write_npz(out / contract.HEATMAPS, index=idx[sel].numpy(), heatmaps=maps.heatmaps.numpy(),
                  raw=maps.raw.numpy(), channel_weights=maps.channel_weights.numpy(),
                  cluster=clusters[sel].numpy(), inputs=x[sel].numpy(), label=y[sel].numpy(),
                  sizes=torch.bincount(clusters, minlength=len(ex.table.before)).numpy())
    return rows
