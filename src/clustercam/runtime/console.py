"""What the terminal shows: the composed config at start, the summary at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    tree = Tree("config", guide_style="dim")
    for key in ("data", "model", "callbacks", "logger", "trainer", "paths"):
        if key in cfg:
            tree.add(f"[bold]{key}[/bold]").add(OmegaConf.to_yaml(cfg[key], resolve=False).rstrip())
    rest = {k: v for k, v in cfg.items() if k not in ("data", "model", "callbacks", "logger", "trainer", "paths")}
    tree.add("[bold]run[/bold]").add(OmegaConf.to_yaml(OmegaConf.create(rest)).rstrip())
    Console().print(tree)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


@rank_zero_only
def print_summary(output_dir: Path, metrics: dict[str, Any]) -> None:
    console = Console()
    if "test/nmi" in metrics:  # autoencoder runs (concept runs have no clustering of samples)
        scores = Table(title="Clustering (evaluated split)")
        keys = ("nmi", "ari", "acc", "recon_loss")
        pretrain = "test/pretrain_nmi" in metrics  # deep clustering: the k-means init beside it
        for key in ("clusters", *keys) if pretrain else keys:
            scores.add_column(key)
        final = [_fmt(metrics.get(f"test/{k}", float("nan"))) for k in keys]
        scores.add_row(*(["model (final)", *final] if pretrain else final))
        if pretrain:
            scores.add_row("k-means init", *(_fmt(metrics.get(f"test/pretrain_{k}", float("nan")))
                                             for k in keys[:3]), "")
        console.print(scores)
    rows = metrics.get("test/cardinality_rows")
    if rows:
        mode = metrics.get("test/gradceam_mode", "")
        table = Table(title=f"Cluster-cardinality discrimination (Grad-CeAM {mode})")
        for col in ("cluster", "before", "after", "ratio"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(*(_fmt(r[c]) for c in ("cluster", "before", "after", "ratio")))
        table.add_section()
        table.add_row("summary", "", "", "median {:.2f} / mean {:.2f} / min {:.2f} / max {:.2f}".format(
            *(metrics.get(f"test/cardinality_{k}", float("nan")) for k in ("median", "mean", "min", "max"))))
        console.print(table)
    console.print(f"[bold green]Outputs:[/bold green] {output_dir}")
