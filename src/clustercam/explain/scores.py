"""Scoring cluster heatmaps: do they find what drives the assignment, and where the signal is?

Two families of scores (issue 7):

- **Faithfulness** (deletion / insertion, Petsiuk et al. 2018, adapted to clusters):
  remove input positions in order of decreasing map value (replace them by a baseline),
  re-encode, and follow the soft assignment to the explained cluster c and whether the
  hard (nearest-centroid) assignment is still c. Insertion starts from the baseline and
  puts the most relevant positions back first. A faithful map gives a *low* deletion
  area and a *high* insertion area. All step inputs of a chunk of samples go through
  the encoder as one batch (``torch.no_grad``, eval mode), so a whole test set stays
  practical on a CPU.
- **Localisation** against a ground-truth mask (synthetic data whose discriminative
  region is known): pointing game, relevance mass inside the mask, AUROC of the map
  values against the mask.

Baseline maps to compare Grad-CeAM with: a seeded random map, the same blurred into
blobs (deleting a contiguous chunk can move an embedding whatever the chunk holds), and
the plain activation map (channel mean of the target layer); see :func:`explanation_maps`.

Why our own code rather than Quantus (checked against quantus 0.6): Quantus's
localisation metrics take precomputed maps and masks and work for series as well as
images (they flatten), and :func:`quantus_localisation` calls them, but two details
differ from what we want: its ``PointingGame`` counts a hit when *any* of several tied
maxima lies in the mask (a constant map always "hits") and returns booleans, so an
empty mask comes back as ``True`` instead of NaN; its ``RelevanceMassAccuracy`` does
not clip negative map values. Our versions are vectorised, give NaN for undefined
cases and score ties at their expected value. For faithfulness, Quantus's
``PixelFlipping`` (deletion only, a Python loop over single-feature steps, no
insertion, no hard-assignment curve, curves without the unperturbed point, area
over step indices) does not fit clustering targets at whole-test-set scale; wrapping
the encoder with :class:`ClusterScoreModel` makes it usable, and the tests check that
our deletion curve equals ``PixelFlipping``'s on the same ordering and baseline.

Nothing here imports Lightning or Hydra.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustercam.explain._layers import eval_mode, hooked, module_device, resolve_layer
from clustercam.explain.gradceam import _resize, grad_ceam, minmax_normalise

Assignment = Literal["softmax", "student_t"]
ASSIGNMENTS: tuple[str, ...] = ("softmax", "student_t")
BASELINES: tuple[str, ...] = ("zero", "mean", "blur")
METHODS: tuple[str, ...] = (
    "random",
    "random_smooth",
    "activation",
    "gradceam_paper",
    "gradceam_reference",
    "gradceam_assignment",
)


# -- assignments ---------------------------------------------------------------------------
def squared_distances(z: Tensor, centroids: Tensor) -> Tensor:
    """N x K squared Euclidean distances, in float64 by explicit differences (no cdist trick)."""
    return (z.double()[:, None, :] - centroids.double()[None]).pow(2).sum(-1)


def soft_assignment(
    z: Tensor,
    centroids: Tensor,
    kind: Assignment = "softmax",
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> Tensor:
    """Soft cluster assignment q (N x K, rows sum to 1).

    ``softmax``: softmax_k(-||z - mu_k||^2 / temperature), the target of Grad-CeAM's
    ``assignment`` mode. ``student_t``: DEC's kernel (1 + ||z - mu_k||^2 / alpha)^(-(alpha+1)/2),
    normalised over k; it has heavier tails, so it saturates less on large embeddings.
    """
    sq = squared_distances(z, centroids)
    if kind == "softmax":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return torch.softmax(-sq / temperature, dim=1)
    if kind == "student_t":
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        q = (1 + sq / alpha).pow(-(alpha + 1) / 2)
        return q / q.sum(1, keepdim=True)
    raise ValueError(f"unknown assignment {kind!r}; choose one of {ASSIGNMENTS}")


def spread_temperature(z: Tensor, centroids: Tensor) -> float:
    """Mean squared distance of each embedding to its nearest centroid (k-means inertia / N).

    A scale-free softmax temperature: the embedding's scale is arbitrary, and a fixed
    T = 1 makes the soft assignment uniform on a collapsed embedding and a 0/1 step on a
    spread-out one; with this T a sample at a typical distance from its centroid keeps a
    graded assignment.
    """
    sq = squared_distances(z, centroids)
    return float(sq.min(1).values.mean())


def hard_assignment(z: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid for each row of z."""
    return squared_distances(z, centroids).argmin(1)


class ClusterScoreModel(nn.Module):
    """An encoder wrapped to output per-cluster scores (N x K soft assignments).

    Makes a clustering look like a classifier to libraries that expect one (Quantus,
    Captum): the "class" of a sample is its cluster.
    """

    def __init__(
        self,
        encoder: nn.Module,
        centroids: Tensor,
        kind: Assignment = "softmax",
        temperature: float = 1.0,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("centroids", centroids.detach().clone().float())
        self.kind, self.temperature, self.alpha = kind, temperature, alpha

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        q = soft_assignment(z, self.centroids, self.kind, self.temperature, self.alpha)
        return q.to(z.dtype)


# -- baselines and orderings ----------------------------------------------------------------
def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur over the spatial axes of N x C x L or N x C x H x W (reflect pad)."""
    if not sigma > 0:
        raise ValueError(f"blur sigma must be > 0, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c = x.shape[:2]
    out = x
    for axis in range(2, x.dim()):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        pad_mode = "reflect" if radius < shape[-1] else "replicate"
        flat = F.pad(flat, (radius, radius), mode=pad_mode)
        flat = F.conv1d(flat, kernel.view(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, axis)
    return out.reshape(n, c, *x.shape[2:])


def make_baseline(x: Tensor, baseline: str | float = "zero", blur_sigma: float | None = None) -> Tensor:
    """What a removed position is replaced by (same shape as x).

    ``zero``: 0 (the mean of a z-normalised series); ``mean``: each sample's per-channel
    mean over positions; ``blur``: a Gaussian-blurred copy (sigma defaults to a tenth of
    the shortest spatial side, at least 1), the usual choice for images because a constant
    patch is itself a strong, out-of-distribution feature; a number: that constant.
    """
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand_as(x).clone()
    if baseline == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(1.0, min(x.shape[2:]) / 10)
        return gaussian_blur(x, sigma)
    raise ValueError(f"unknown baseline {baseline!r}; choose one of {BASELINES} or a number")


def position_ranks(maps: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Rank of each position (0 = highest map value) per sample, N x D; ties broken at random.

    Random tie-breaking matters: a constant map (e.g. a Grad-CeAM map whose channel
    weights are all negative, hence all zero after the ReLU) must score like a random
    map, not like "delete from left to right".
    """
    flat = maps.flatten(1).double()
    if not torch.isfinite(flat).all():
        raise ValueError("maps contain NaN or infinite values")
    n, d = flat.shape
    perm = torch.rand(n, d, generator=generator).argsort(1)
    order = perm.gather(1, torch.argsort(-flat.gather(1, perm), dim=1, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(d).expand(n, d).contiguous())
    return ranks


# -- deletion / insertion --------------------------------------------------------------------
@dataclass
class PerturbationCurves:
    """Deletion and insertion curves for N samples over S + 1 steps.

    ``fractions`` (S + 1): share of positions removed (deletion) or inserted (insertion).
    ``deletion``/``insertion`` (N x S + 1): soft assignment to the explained cluster;
    ``deletion_hard``/``insertion_hard``: 1 while the nearest centroid is that cluster.
    ``clusters`` (N): the explained cluster; ``assigned`` (N): the unperturbed sample's
    nearest centroid; ``baseline_assigned`` (N): the nearest centroid of the all-baseline
    input. Where that is the explained cluster, deleting everything does not leave the
    cluster, so the curves of these samples say little about the map (see
    :func:`summarise_curves`).
    """

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_hard: Tensor
    insertion_hard: Tensor
    clusters: Tensor
    assigned: Tensor
    baseline_assigned: Tensor

    @property
    def informative(self) -> Tensor:
        """Samples whose all-baseline input leaves the explained cluster (N, bool)."""
        return self.baseline_assigned != self.clusters

    def aucs(self) -> dict[str, Tensor]:
        """Per-sample areas under each curve (trapezoid over the fraction, in [0, 1])."""
        return {
            "deletion_auc": curve_auc(self.deletion, self.fractions),
            "insertion_auc": curve_auc(self.insertion, self.fractions),
            "deletion_hard_auc": curve_auc(self.deletion_hard, self.fractions),
            "insertion_hard_auc": curve_auc(self.insertion_hard, self.fractions),
        }


def curve_auc(curves: Tensor, fractions: Tensor) -> Tensor:
    """Trapezoid area under each row of ``curves`` over ``fractions`` (0 to 1)."""
    return torch.trapezoid(curves.double(), fractions.double(), dim=-1)


def step_counts(n_positions: int, steps: int) -> Tensor:
    """How many positions are removed at each of the steps 0..S (rounded, 0 and D included)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.round(torch.linspace(0, n_positions, steps + 1, dtype=torch.float64)).long()


def deletion_insertion(
    encoder: nn.Module,
    x: Tensor,
    maps: Tensor,
    centroids: Tensor,
    clusters: Tensor | None = None,
    steps: int = 20,
    baseline: str | float = "zero",
    blur_sigma: float | None = None,
    assignment: Assignment = "softmax",
    temperature: float = 1.0,
    alpha: float = 1.0,
    batch_size: int = 512,
    seed: int = 0,
) -> PerturbationCurves:
    """Deletion and insertion curves of ``maps`` (N x spatial) for the samples ``x``.

    ``x``: N x C x L or N x C x H x W; a *position* is a time step or a pixel, all its
    channels removed together. ``clusters`` (N): the cluster each map explains (default:
    each sample's nearest centroid). ``steps``: S, the curve has S + 1 points from 0 to
    all positions. ``baseline``: see :func:`make_baseline`. ``batch_size`` caps the
    encoder batch; a chunk of samples contributes its 2 S distinct step inputs (deletion
    0..S and insertion 1..S-1: insertion's ends are deletion's ends reversed). ``seed``
    fixes the random tie-breaking of equal map values.
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"x must be N x C x L or N x C x H x W, got shape {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    if maps.dim() == x.dim() and maps.shape[1] == 1:
        maps = maps[:, 0]
    if tuple(maps.shape) != (x.shape[0], *spatial):
        raise ValueError(
            f"maps must be N x spatial = {(x.shape[0], *spatial)} for x of shape "
            f"{tuple(x.shape)}, got {tuple(maps.shape)}"
        )
    if centroids.dim() != 2 or centroids.shape[0] < 2:
        raise ValueError(f"centroids must be K x m with K >= 2, got {tuple(centroids.shape)}")
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment!r}; choose one of {ASSIGNMENTS}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, c = x.shape[:2]
    k = centroids.shape[0]
    if clusters is not None:
        clusters = torch.as_tensor(clusters, dtype=torch.long).flatten()
        if clusters.shape[0] != n or (clusters < 0).any() or (clusters >= k).any():
            raise ValueError(f"clusters must be N = {n} indices in [0, {k}), got {clusters}")
    d = int(np.prod(spatial))
    counts = step_counts(d, steps)
    fractions = counts.double() / d
    gen = torch.Generator().manual_seed(seed)
    ranks = position_ranks(maps.cpu(), gen)  # N x D
    device = module_device(encoder, x.device)
    dtype = next((p.dtype for p in encoder.parameters()), torch.float32)
    mu = centroids.detach().to(device=device, dtype=torch.float64)
    n_inputs = 2 * steps  # distinct step inputs per sample
    per_chunk = max(1, batch_size // n_inputs)
    thresholds = counts.view(1, -1, 1)
    soft_parts: list[Tensor] = []
    hard_parts: list[Tensor] = []
    with eval_mode(encoder), torch.no_grad():
        for start in range(0, n, per_chunk):
            xc = x[start : start + per_chunk].detach().to(device="cpu", dtype=dtype)
            xb = xc.flatten(2)
            base = make_baseline(xc, baseline, blur_sigma).flatten(2)
            rb = ranks[start : start + per_chunk, None, :]  # b x 1 x D
            removed = (rb < thresholds)[:, :, None, :]  # b x S+1 x 1 x D
            deleted = torch.where(removed, base[:, None], xb[:, None])
            inserted = torch.where(removed[:, 1:steps], xb[:, None], base[:, None])
            stack = torch.cat([deleted, inserted], 1)  # b x 2S x C x D
            b = stack.shape[0]
            flat = stack.reshape(b * n_inputs, c, *spatial)
            zs = [
                encoder(flat[i : i + batch_size].to(device)).double()
                for i in range(0, len(flat), batch_size)
            ]
            z = torch.cat(zs)
            q = soft_assignment(z, mu, assignment, temperature, alpha)
            soft_parts.append(q.reshape(b, n_inputs, k).cpu())
            hard_parts.append(hard_assignment(z, mu).reshape(b, n_inputs).cpu())
    q = torch.cat(soft_parts)  # N x 2S x K
    h = torch.cat(hard_parts)  # N x 2S
    assigned = h[:, 0]
    target = assigned if clusters is None else clusters
    q_t = q.gather(2, target.view(n, 1, 1).expand(n, n_inputs, 1))[..., 0]
    h_t = (h == target[:, None]).double()

    def curves(v: Tensor) -> tuple[Tensor, Tensor]:
        dele = v[:, : steps + 1]
        ins = torch.cat([v[:, steps : steps + 1], v[:, steps + 1 :], v[:, :1]], 1)
        return dele, ins

    del_soft, ins_soft = curves(q_t)
    del_hard, ins_hard = curves(h_t)
    return PerturbationCurves(
        fractions=fractions,
        deletion=del_soft,
        insertion=ins_soft,
        deletion_hard=del_hard,
        insertion_hard=ins_hard,
        clusters=target,
        assigned=assigned,
        baseline_assigned=h[:, steps],
    )


# -- the maps to compare -----------------------------------------------------------------------
def random_maps(shape: Sequence[int], seed: int = 0) -> Tensor:
    """A seeded uniform random map per sample (N x spatial): the chance baseline."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(shape), generator=gen)


def smooth_random_maps(shape: Sequence[int], seed: int = 0, sigma: float | None = None) -> Tensor:
    """Seeded random maps blurred into blobs (sigma: a twentieth of the shortest side, >= 1).

    The control for contiguity: deleting a contiguous chunk of a series or image can move
    an embedding more than deleting scattered positions, whatever the chunk holds, so a
    structured map should beat this one, not only the scattered ``random`` map.
    """
    shape = tuple(shape)
    noise = random_maps(shape, seed)[:, None]
    sigma = sigma if sigma is not None else max(1.0, min(shape[1:]) / 20)
    return minmax_normalise(gaussian_blur(noise, sigma), len(shape) - 1)[:, 0]


def activation_maps(
    encoder: nn.Module, target_layer: nn.Module | str, x: Tensor, batch_size: int = 512
) -> Tensor:
    """Mean of the target layer's activations over channels, resized to the input, min-max
    normalised per sample: where the layer responds at all, with no cluster in it."""
    layer = resolve_layer(encoder, target_layer)
    device = module_device(encoder, x.device)
    dtype = next((p.dtype for p in encoder.parameters()), torch.float32)
    size = tuple(x.shape[2:])
    captured: dict[str, Tensor] = {}

    def keep(output: Tensor) -> None:
        captured["A"] = output.detach()

    parts = []
    with eval_mode(encoder), torch.no_grad(), hooked(layer, keep):
        for start in range(0, x.shape[0], batch_size):
            encoder(x[start : start + batch_size].to(device=device, dtype=dtype))
            a = captured.pop("A").mean(1, keepdim=True)  # b x 1 x spatial
            parts.append(minmax_normalise(_resize(a, size), len(size))[:, 0].cpu())
    return torch.cat(parts)


def explanation_maps(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    clusters: Tensor,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    temperature: float = 1.0,
    smooth: bool = False,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """Each method's map (N x spatial, in [0, 1]) of sample i for cluster ``clusters[i]``.

    Methods: ``random`` (seeded), ``random_smooth`` (seeded blobs, see
    :func:`smooth_random_maps`), ``activation`` (channel mean of A), and
    ``gradceam_<mode>`` for the Grad-CeAM modes ``paper``, ``reference``, ``assignment``
    (maps resized to the input and min-max normalised per sample, as ``grad_ceam``
    returns them). Grad-CeAM runs per chunk of ``batch_size`` samples and keeps only the
    explained cluster's map, so memory does not grow with K.
    """
    n = x.shape[0]
    clusters = torch.as_tensor(clusters, dtype=torch.long).flatten()
    if clusters.shape[0] != n:
        raise ValueError(f"clusters must have N = {n} entries, got {clusters.shape[0]}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    out: dict[str, Tensor] = {}
    for method in methods:
        if method == "random":
            out[method] = random_maps((n, *x.shape[2:]), seed)
        elif method == "random_smooth":
            out[method] = smooth_random_maps((n, *x.shape[2:]), seed)
        elif method == "activation":
            out[method] = activation_maps(encoder, target_layer, x, batch_size)
        else:
            mode = method.removeprefix("gradceam_")
            parts = []
            for start in range(0, n, batch_size):
                res = grad_ceam(
                    encoder, target_layer, x[start : start + batch_size], centroids,
                    mode=mode, temperature=temperature, batch_size=None, smooth=smooth,
                )
                sel = clusters[start : start + batch_size]
                parts.append(res.heatmaps[torch.arange(len(sel)), sel])
            out[method] = torch.cat(parts)
    return out


# -- localisation --------------------------------------------------------------------------------
def _flat(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    m = torch.as_tensor(maps).double()
    s = torch.as_tensor(masks)
    if m.shape != s.shape:
        raise ValueError(f"maps {tuple(m.shape)} and masks {tuple(s.shape)} must have one shape")
    if m.dim() < 2:
        raise ValueError(f"maps must be N x spatial, got shape {tuple(m.shape)}")
    return m.flatten(1), s.flatten(1).bool()


def pointing_game(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> Tensor:
    """Is the map's maximum inside the mask? Per sample, 1.0 or 0.0 (Zhang et al. 2018).

    When several positions tie for the maximum, the score is the share of them inside the
    mask (the expected hit under random tie-breaking), so a constant map scores the mask's
    coverage, i.e. chance. NaN for an empty mask.
    """
    m, s = _flat(maps, masks)
    top = m == m.max(1, keepdim=True).values
    hit = (top & s).sum(1).double() / top.sum(1).double()
    return torch.where(s.any(1), hit, math.nan)


def relevance_mass(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> Tensor:
    """Share of the (non-negative part of the) map inside the mask (Arras et al. 2022).

    NaN for an empty mask or a map with no positive value.
    """
    m, s = _flat(maps, masks)
    m = m.clamp_min(0)
    total = m.sum(1)
    inside = (m * s).sum(1)
    ok = (total > 0) & s.any(1)
    return torch.where(ok, inside / total.clamp_min(torch.finfo(total.dtype).tiny), math.nan)


def mask_auroc(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> Tensor:
    """AUROC of the map values as a detector of mask positions, per sample (0.5 = chance).

    scikit-learn's ``roc_auc_score``; NaN (and one warning) for masks that are all 0 or all 1.
    """
    from sklearn.metrics import roc_auc_score

    m, s = _flat(maps, masks)
    out = torch.full((m.shape[0],), math.nan, dtype=torch.float64)
    covered = s.sum(1)
    valid = (covered > 0) & (covered < s.shape[1])
    m_np, s_np = m.numpy(), s.numpy()
    for i in valid.nonzero().flatten().tolist():
        out[i] = float(roc_auc_score(s_np[i], m_np[i]))
    bad = int((~valid).sum())
    if bad:
        warnings.warn(
            f"{bad} masks are all 0 or all 1: their AUROC is undefined (NaN)", RuntimeWarning,
            stacklevel=2,
        )
    return out


def _nanmean(v: Tensor) -> float:
    ok = ~torch.isnan(v)
    return float(v[ok].mean()) if ok.any() else math.nan


def localisation_scores(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> dict[str, float]:
    """Mean pointing game, relevance mass and AUROC over samples (NaNs skipped), with the
    mean mask coverage: the chance level of the first two (a uniform map scores it)."""
    _, s = _flat(maps, masks)
    return {
        "pointing_game": _nanmean(pointing_game(maps, masks)),
        "relevance_mass": _nanmean(relevance_mass(maps, masks)),
        "auroc": _nanmean(mask_auroc(maps, masks)),
        "mask_fraction": float(s.double().mean()),
        "n_samples": int(s.shape[0]),
    }


def quantus_localisation(
    maps: Tensor | np.ndarray, masks: Tensor | np.ndarray, model: nn.Module | None = None
) -> dict[str, np.ndarray]:
    """The same three localisation scores from Quantus (``PointingGame``,
    ``RelevanceMassAccuracy``, ``AUC``), per sample, for cross-checks.

    Maps are clipped at 0 and not renormalised (``normalise=False``, ``abs=False``).
    Quantus's pointing game counts any tied maximum in the mask as a hit and gives
    ``True`` for an empty mask. ``model`` is not used by these metrics (the maps are
    given); pass a :class:`ClusterScoreModel` if a Quantus version insists on one.
    """
    import quantus

    m = torch.as_tensor(maps).double().clamp_min(0).numpy()
    s = torch.as_tensor(masks).double().numpy()
    a_batch = m[:, None].astype(np.float32)
    s_batch = s[:, None].astype(np.float32)
    x_batch = np.zeros_like(a_batch)
    y_batch = np.zeros(len(m), dtype=np.int64)
    kwargs = {"model": model, "x_batch": x_batch, "y_batch": y_batch, "a_batch": a_batch,
              "s_batch": s_batch, "channel_first": True, "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = quantus.PointingGame(disable_warnings=True)(**kwargs)
        rm = quantus.RelevanceMassAccuracy(disable_warnings=True, normalise=False, abs=False)(**kwargs)
        auc = quantus.AUC(disable_warnings=True, normalise=False, abs=False)(**kwargs)
    return {
        "pointing_game": np.asarray(pg, dtype=np.float64),
        "relevance_mass": np.asarray(rm, dtype=np.float64),
        "auroc": np.asarray(auc, dtype=np.float64),
    }


# -- summaries -------------------------------------------------------------------------------------
def summarise_curves(
    method: str, curves: PerturbationCurves, n_clusters: int
) -> list[dict[str, float | int | str]]:
    """Rows ``method, cluster, deletion_auc, insertion_auc, deletion_hard_auc,
    insertion_hard_auc, n_samples, baseline_share`` (means over samples).

    One row per explained cluster (empty ones skipped), one ``all`` row, and one
    ``excl_baseline`` row over the samples whose all-baseline input leaves their cluster.
    ``baseline_share`` is the share of a row's samples whose all-baseline input stays in
    the cluster: for them deletion ends and insertion starts in the cluster whatever the
    map, so their areas say little and dilute the differences between methods (the zero
    series falls into one cluster of Trace that holds about half the test set);
    ``excl_baseline`` leaves them out.
    """
    aucs = curves.aucs()
    stays = ~curves.informative
    rows: list[dict[str, float | int | str]] = []
    groups: list[tuple[str, Tensor]] = [
        (str(c), curves.clusters == c) for c in range(n_clusters)
    ] + [("all", torch.ones_like(stays)), ("excl_baseline", ~stays)]
    for name, sel in groups:
        if not sel.any():
            continue
        row: dict[str, float | int | str] = {"method": method, "cluster": name}
        row.update({key: float(v[sel].mean()) for key, v in aucs.items()})
        row["n_samples"] = int(sel.sum())
        row["baseline_share"] = float(stays[sel].double().mean())
        rows.append(row)
    return rows


def mean_curves(
    curves: Mapping[str, PerturbationCurves], informative_only: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """Per method, the mean deletion / insertion curves (soft and hard) and the fractions;
    ``informative_only``: over the samples whose all-baseline input leaves their cluster."""
    out = {}
    for method, c in curves.items():
        sel = c.informative if informative_only else torch.ones_like(c.clusters, dtype=torch.bool)
        out[method] = {
            "fractions": c.fractions.numpy(),
            **{key: getattr(c, key)[sel].mean(0).numpy()
               for key in ("deletion", "insertion", "deletion_hard", "insertion_hard")},
        }
    return out
