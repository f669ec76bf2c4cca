"""Reaching into an encoder: find a target layer, read (or replace) its output, eval mode.

Every forward hook is registered inside a ``with`` block and removed when it ends, also
when the encoder raises, so no hook outlives the call that made it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.layouts import Layout, LayoutSpec, layout_to_read


def resolve_layer(encoder: nn.Module, target_layer: nn.Module | str) -> nn.Module:
    """The module ``target_layer`` names inside ``encoder`` (or check it is one of its modules)."""
    if isinstance(target_layer, str):
        modules = dict(encoder.named_modules())
        if target_layer not in modules:
            names = [n for n in modules if n]
            close = difflib.get_close_matches(target_layer, names, n=5, cutoff=0.5)
            rest = [n for n in names if n not in close]
            shown = close + rest[: max(0, 20 - len(close))] + (["..."] if len(names) > 20 else [])
            raise UserError(
                f"layer {target_layer!r} is not a module of {type(encoder).__name__}; its modules "
                f"are (closest first) {shown}"
            )
        return modules[target_layer]
    if not isinstance(target_layer, nn.Module) or not any(
        m is target_layer for m in encoder.modules()
    ):
        raise UserError(
            f"target_layer {type(target_layer).__name__} is not a module of the encoder "
            f"{type(encoder).__name__}"
        )
    return target_layer


def layer_name(encoder: nn.Module, layer: nn.Module) -> str:
    """The dotted name of ``layer`` inside ``encoder`` (for messages)."""
    return next((n or "<the encoder itself>" for n, m in encoder.named_modules() if m is layer),
                type(layer).__name__)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run in eval mode (running BatchNorm statistics, no dropout), then restore every submodule."""
    states = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in states:
            m.training = training


@contextmanager
def hooked(layer: nn.Module, fn: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``fn`` on the layer's output during forward; a returned tensor replaces the output."""

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise UserError(
                f"the target layer must output a single tensor, got {type(output).__name__}"
            )
        return fn(output)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def module_device(module: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the module's first parameter (``fallback`` for a parameter-free module)."""
    for p in module.parameters():
        return p.device
    return fallback


def module_dtype(module: nn.Module, fallback: torch.dtype = torch.float32) -> torch.dtype:
    """The floating dtype of the module's first parameter."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), fallback)


def embed(encoder: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """z = encoder(x) in eval mode without autograd, in chunks of ``batch_size``, on the CPU."""
    device, dtype = module_device(encoder, x.device), module_dtype(encoder)
    with eval_mode(encoder), torch.no_grad():
        return torch.cat([encoder(x[i : i + batch_size].to(device=device, dtype=dtype)).cpu()
                          for i in range(0, len(x), batch_size)])


def layer_layout(encoder: nn.Module, layer: nn.Module, output: Tensor, x: Tensor,
                 layout: LayoutSpec | Layout = "auto") -> Layout | None:
    """How to read the target layer's ``output`` for inputs ``x`` (None: as it is, channels
    first): tokens and channels-last outputs become B x C x grid
    (:func:`~clustercam.explain.layouts.layout_to_read`)."""
    return layout_to_read(output, model=encoder, layer=layer, input_size=tuple(x.shape[2:]), layout=layout,
                          name=f"the target layer {layer_name(encoder, layer)!r}")


def forward_with_layer(
    encoder: nn.Module, layer: nn.Module, x: Tensor, with_grad: bool = False,
    layout: LayoutSpec | Layout = "auto",
) -> tuple[Tensor, Tensor]:
    """z = encoder(x) and the target layer's output A, channels first (B x C x positions).

    ``with_grad``: A is part of the graph (a fresh grad leaf when nothing upstream needs
    grad, e.g. a frozen encoder), so dz/dA can be taken. A token or channels-last output is
    read as its grid by ``layout`` (:func:`layer_layout`), and the grid written back into
    the layer's output, so the gradient reaches it. An error names the layer when the
    forward pass never calls it.
    """
    captured: dict[str, Tensor] = {}

    def keep(output: Tensor) -> Tensor:
        lay = layer_layout(encoder, layer, output, x, layout)
        a = output if lay is None else lay.read(output)
        if with_grad and not a.requires_grad:
            a = a.detach().requires_grad_(True)
        captured["A"] = a
        return a if lay is None else lay.write(a, output)

    with hooked(layer, keep), torch.set_grad_enabled(with_grad):
        z = encoder(x)
    if "A" not in captured:
        raise UserError(
            f"the target layer {layer_name(encoder, layer)!r} ({type(layer).__name__}) was not "
            f"called during the forward pass of {type(encoder).__name__}: choose a module the "
            "encoder's forward uses"
        )
    return z, captured["A"]
