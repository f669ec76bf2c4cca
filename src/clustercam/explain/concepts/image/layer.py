"""Concepts at any layer of a classifier: its output read as a grid, the rest of the network run.

A layer's output is read as ``B x C x h x w`` by its :class:`~clustercam.explain.layouts.Layout`
(channels-last and token outputs included). Importance, sub-concept importance and fidelity
zero a concept's channels at the layer and run the rest of the network from there: the
network's forward on the batch's inputs, with a forward hook that replaces the layer's
output by the ablated grid written back in the layer's layout (:func:`rest_of_network`).
Where the rest is exactly pooling + one linear layer, the closed form of
:mod:`.ablation` is kept instead. A layer whose ablation cannot reach the logits (the
patch tokens of a class-token ViT's last block: its head reads only the class token) is
said so (:func:`warn_if_unreachable`).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from clustercam.explain.concepts.image.ablation import BatchHead, Head, head_logits
from clustercam.explain.hooks import hooked
from clustercam.explain.layouts import Layout


class UnreachableLayerWarning(UserWarning):
    """Ablating the layer's positions does not change the logits: every importance is 0."""


def rest_of_network(
    forward: Callable[[Tensor], Tensor],
    layer: nn.Module,
    layout: Layout,
    x: Tensor,
    *,
    max_rows: int = 256,
) -> BatchHead:
    """The head of an intermediate layer for the batch ``x``: the logits of ``forward(x[rows])``
    with the layer's output replaced by the rows' (ablated) activations.

    The network up to the layer runs once per image, not once per ablation: the forward
    pass takes each image of the rows once and the hook hands the rest of the network one
    copy of the layer's output per row. That holds when nothing after the layer reads an
    earlier tensor of a different batch size (a skip connection over the layer); it is
    checked once against repeating the inputs (the always-correct way), which is used
    instead where it fails.

    Args:
        forward: the network, inputs -> logits (its forward must call ``layer``).
        layer: the module whose output the activations are.
        layout: how the layer's output maps to the activations' grid.
        x: the batch's inputs (B x ...).
        max_rows: rows per forward call (each row is a whole forward pass).

    Returns:
        A :class:`~clustercam.explain.concepts.image.ablation.BatchHead` of the B images.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from clustercam.explain.layouts import Layout
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x = torch.rand(3, 1, 4, 4)
        >>> head = rest_of_network(net, net[0], Layout("nchw"), x)
        >>> a = torch.zeros(3, 2, 4, 4); a[:, 1] = 2.0        # the conv's output, replaced
        >>> head(a)[0].tolist()                                 # relu + mean of each channel
        [0.0, 2.0]
    """

    state = {"share": None}  # None: not checked yet

    def through(inputs: Tensor, replace: Callable[[Tensor], Tensor]) -> Tensor:
        # run_concepts ablates configurations in parallel CPU threads, each with its own hook on
        # the same layer: a hook replaces the output of its own thread's forward pass only
        owner = threading.get_ident()
        with hooked(layer, lambda out: replace(out) if threading.get_ident() == owner else None):
            return forward(inputs)

    def every_row(a: Tensor, rows: Tensor) -> Tensor:  # x repeated: upstream once per row
        return through(x[rows.to(x.device)], lambda out: layout.write(a.to(out.device), out))

    def shared(a: Tensor, rows: Tensor) -> Tensor | None:  # upstream once per image
        uniq, inverse = torch.unique(rows, return_inverse=True)
        try:
            out = through(x[uniq.to(x.device)], lambda o: layout.write(a.to(o.device), o[inverse.to(o.device)]))
        except (RuntimeError, AssertionError, ValueError):  # the rest mixes in earlier tensors
            return None
        return out if out.shape[0] == len(rows) else None

    def run(a: Tensor, rows: Tensor) -> Tensor:
        if state["share"] is False or len(torch.unique(rows)) == len(rows):
            return every_row(a, rows)
        if state["share"] is None:  # once: sharing must give what repeating x gives
            k = min(len(rows), 8)
            got, ref = shared(a[:k], rows[:k]), every_row(a[:k], rows[:k])
            state["share"] = got is not None and torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * (1 + float(ref.abs().max())))
            if not state["share"]:
                return every_row(a, rows)
        out = shared(a, rows)
        if out is None:
            state["share"] = False
            return every_row(a, rows)
        return out

    return BatchHead(run, len(x), max_rows)


def features_head(head: Callable[[Tensor], Tensor], layout: Layout, output: Tensor,
                  max_rows: int = 1024) -> BatchHead:
    """The head ``h`` of a final feature output that is not a plain grid (tokens: ``h`` reads
    the prefix tokens too) as a :class:`BatchHead`: ``head(layout.write(A, output[rows]))``."""
    return BatchHead(lambda a, rows: head(layout.write(a, output[rows.to(output.device)])), len(output), max_rows)


def earlier_layer(model: nn.Module, name: str | None) -> str | None:
    """A layer before ``name`` to suggest (None: the final features): the previous block of
    a numbered container (``blocks.10`` -> ``blocks.9``; the final features of a model with
    ``blocks`` / ``stages`` / ``layers`` -> the second-to-last of them), else None."""
    if name is None:
        for attr in ("blocks", "stages", "layers"):
            seq = getattr(model, attr, None)
            if isinstance(seq, nn.Sequential | nn.ModuleList) and len(seq) >= 2:
                return f"{attr}.{len(seq) - 2}"
        return None
    m = re.fullmatch(r"(.*\.)?(\d+)", name)
    if m and int(m.group(2)) > 0:
        return f"{m.group(1) or ''}{int(m.group(2)) - 1}"
    return None


@torch.no_grad()
def warn_if_unreachable(head: Head, activations: Tensor, logits: Tensor, *, layer: str,
                        earlier: str | None = None) -> bool:
    """Warn (:class:`UnreachableLayerWarning`) when zeroing every channel of the layer at every
    position leaves the logits as they were: the rest of the network does not read these
    positions, so every concept's importance would be 0. Returns whether it warned."""
    if not bool((activations != 0).any()):
        return False  # nothing to ablate: no evidence either way
    zeroed = head_logits(head, torch.zeros_like(activations), torch.arange(len(activations)))
    ref = logits.to(zeroed.device, zeroed.dtype)
    scale = 1.0 + float(ref.abs().max())
    if not torch.allclose(zeroed, ref, rtol=1e-5, atol=1e-5 * scale):
        return False
    hint = (f"choose an earlier layer, e.g. callbacks.concepts.layer={earlier}" if earlier
            else "choose an earlier layer")
    warnings.warn(
        f"ablating the positions of layer {layer!r} does not change the logits: the rest of the network "
        "does not read them (a class-token ViT's head reads only the class token after the last block), "
        f"so every concept's importance and fidelity is 0; {hint}",
        UnreachableLayerWarning, stacklevel=2)
    return True
