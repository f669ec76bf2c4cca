"""How a layer's output is read as channels at positions, and written back after an ablation.

The methods (concepts, Grad-CeAM, cardinality, NEON) work on ``B x C x (grid)``: channels
at positions of a 2-D grid (``gh x gw``) or of a 1-D sequence (``L``). A layer's own output
can be laid out in other ways:

- ``nchw``: ``B x C x H x W`` (CNNs), read as it is;
- ``nhwc``: ``B x H x W x C`` (channels-last backbones such as timm's Swin), permuted;
- ``tokens``: ``B x T x D`` (the ViT family): the model's prefix tokens (class,
  distillation, register) are dropped and the other ``gh * gw`` tokens reshaped row-major
  to the patch grid, whose size comes from the model and the input size, never from the
  token count;
- ``ncl``: ``B x C x L`` (1-D CNNs: positions are time steps);
- a callable ``f(output) -> B x C x H x W`` (pytorch-grad-cam's ``reshape_transform``): any
  other layout. It must only move values (slice, reshape, permute): it is applied once to
  an index tensor to learn where each grid value lives, which writes ablations back.

:func:`infer_layout` picks the layout of a layer from the model (timm's
``num_prefix_tokens``, ``patch_embed`` with its ``dynamic_feat_size`` for the actual input
size, the ``output_fmt`` a channels-last module declares). :meth:`Layout.write` puts an
ablated grid back into the layer's own layout, the prefix tokens (and anything a custom
layout does not read) taken from the layer's output, so the rest of the network runs on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError

LAYOUTS = ("auto", "nchw", "nhwc", "tokens", "ncl")
LayoutSpec = str | Callable[[Tensor], Tensor] | None


@dataclass(frozen=True)
class Layout:
    """How one layer's output maps to ``B x C x (grid)``.

    Args:
        kind: ``nchw``, ``nhwc``, ``tokens``, ``ncl`` or ``custom``.
        grid: the positions (``(gh, gw)``, or ``(L,)`` for ``ncl``); for ``tokens`` the
            patch grid (needed), for the others what the output had when the layout was
            inferred (None: any).
        prefix: tokens before the patch tokens (``tokens`` only).
        transform: the read callable of a ``custom`` layout.

    Raises:
        UserError: an unknown kind, a token layout without a grid, a negative prefix.

    Example:
        >>> import torch
        >>> lay = Layout("tokens", grid=(2, 3), prefix=1)      # a class token + 2 x 3 patches
        >>> tokens = torch.arange(7.0).view(1, 7, 1)            # one channel: the token's index
        >>> lay.read(tokens)[0, 0].tolist()
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        >>> lay.write(torch.zeros(1, 1, 2, 3), tokens)[0, :, 0].tolist()   # the class token stays
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """

    kind: str
    grid: tuple[int, ...] | None = None
    prefix: int = 0
    transform: Callable[[Tensor], Tensor] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("nchw", "nhwc", "tokens", "ncl", "custom"):
            raise UserError(f"unknown layout {self.kind!r}; choose one of {LAYOUTS[1:]} or a callable")
        if self.kind == "tokens" and (self.grid is None or len(self.grid) != 2):
            raise UserError(f"a token layout needs its patch grid (gh, gw), got {self.grid}")
        if self.prefix < 0:
            raise UserError(f"prefix tokens must be >= 0, got {self.prefix}")
        if self.kind == "custom" and not callable(self.transform):
            raise UserError("a custom layout needs its read callable")
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))

    @property
    def channel_dim(self) -> int:
        """The channel axis of the layer's own output (-1 for a custom layout)."""
        return {"nchw": 1, "ncl": 1, "nhwc": -1, "tokens": -1}.get(self.kind, -1)

    def _check(self, output: Tensor) -> None:
        dims = {"nchw": 4, "nhwc": 4, "tokens": 3, "ncl": 3}.get(self.kind)
        if dims is not None and output.dim() != dims:
            raise UserError(f"a {self.kind} layer output has {dims} dimensions, got shape {tuple(output.shape)}")
        if self.kind == "tokens":
            gh, gw = self.grid
            if output.shape[1] != self.prefix + gh * gw:
                raise UserError(
                    f"the layer outputs {output.shape[1]} tokens, but the model's grid is {gh} x {gw} "
                    f"with {self.prefix} prefix tokens ({self.prefix + gh * gw} tokens): not a token "
                    "layer of this input (pass a layout callable for another token order)")

    def read(self, output: Tensor) -> Tensor:
        """``B x C x (grid)`` (a view where the layout allows)."""
        self._check(output)
        if self.kind in ("nchw", "ncl"):
            return output
        if self.kind == "nhwc":
            return output.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            return output[:, self.prefix:].unflatten(1, self.grid).permute(0, 3, 1, 2)
        out = self.transform(output)
        if not isinstance(out, Tensor) or out.dim() not in (3, 4) or out.shape[0] != output.shape[0]:
            raise UserError(f"the layout callable must return B x C x H x W (or B x C x L) for an output "
                            f"of shape {tuple(output.shape)}, got {getattr(out, 'shape', type(out).__name__)}")
        return out

    def write(self, grid: Tensor, output: Tensor) -> Tensor:
        """``output`` (the layer's own layout) with its positions replaced by ``grid``.

        Args:
            grid: ``B x C x (grid)``, e.g. ablated activations of :meth:`read`.
            output: the layer's output for the same B images (prefix tokens, and whatever a
                custom layout does not read, come from it).

        Raises:
            UserError: when the shapes do not match.
        """
        if grid.shape[0] != output.shape[0]:
            raise UserError(f"cannot write {grid.shape[0]} grids into a layer output of {output.shape[0]} images")
        if self.kind in ("nchw", "ncl"):
            return grid.reshape(output.shape).to(output.dtype)
        if self.kind == "nhwc":
            return grid.permute(0, 2, 3, 1).reshape(output.shape).to(output.dtype)
        if self.kind == "tokens":
            self._check(output)
            patches = grid.flatten(2).transpose(1, 2).to(output.dtype)
            return torch.cat([output[:, : self.prefix], patches], 1)
        where = self._positions(output)
        if where.shape != grid.shape:
            raise UserError(f"grid {tuple(grid.shape)} does not match the layout's {tuple(where.shape)}")
        flat = output.flatten().clone()
        flat[where.flatten()] = grid.flatten().to(output.dtype)
        return flat.view(output.shape)

    def _positions(self, output: Tensor) -> Tensor:
        """Where each value of a custom layout's grid lives in the flattened output."""
        index = torch.arange(output.numel(), device=output.device).view(output.shape)
        try:  # any failure means the same thing to the user
            where = self.transform(index)
        except Exception as err:  # noqa: BLE001
            raise UserError(f"the layout callable cannot be written back: it must only move values "
                            f"(slice, reshape, permute) so that it works on an index tensor ({err})") from None
        moved = (isinstance(where, Tensor) and where.dtype == torch.long and where.numel() > 0
                 and 0 <= int(where.min()) and int(where.max()) < output.numel()
                 and where.unique().numel() == where.numel())
        if not moved or not torch.equal(self.transform(output), output.flatten()[where]):
            raise UserError("the layout callable cannot be written back: it must only move values (slice, "
                            "reshape, permute), so that on an index tensor it returns distinct indices")
        return where


def grid_2d(grid: Tensor) -> Tensor:
    """``B x C x H x W`` of a read grid: a 1-D ``B x C x L`` one becomes ``B x C x 1 x L``."""
    return grid.unsqueeze(2) if grid.dim() == 3 else grid


def _output_fmt(module: nn.Module | None) -> str | None:
    fmt = getattr(module, "output_fmt", None) if module is not None else None
    if fmt is None:
        return None
    return str(getattr(fmt, "value", fmt)).upper()


def token_grid(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, int] | None:
    """The patch grid (gh, gw) of a ViT-style model at ``input_size`` (H, W), or None.

    ``model.token_grid(input_size)`` if the model defines it, else timm's ``patch_embed``:
    ``dynamic_feat_size(input_size)`` (dynamic image sizes, padding) or its ``grid_size``.
    """
    own = getattr(model, "token_grid", None)
    if callable(own):
        return tuple(int(g) for g in own(input_size))
    embed = getattr(model, "patch_embed", None)
    if embed is None:
        return None
    if input_size is not None and callable(getattr(embed, "dynamic_feat_size", None)):
        return tuple(int(g) for g in embed.dynamic_feat_size(tuple(int(s) for s in input_size)))
    grid = getattr(embed, "grid_size", None)
    return tuple(int(g) for g in grid) if grid is not None else None


def is_token_model(model: nn.Module | None) -> bool:
    """Whether ``model`` says it works on tokens.

    timm's ViT family has ``num_prefix_tokens`` or a ``patch_embed``; any model may declare
    its own ``token_grid``.
    """
    return model is not None and (hasattr(model, "num_prefix_tokens") or hasattr(model, "patch_embed")
                                  or callable(getattr(model, "token_grid", None)))


def infer_layout(
    output: Tensor,
    *,
    model: nn.Module | None = None,
    layer: nn.Module | None = None,
    input_size: Sequence[int] | None = None,
    layout: LayoutSpec | Layout = "auto",
    name: str = "the layer",
) -> Layout:
    """The :class:`Layout` of a layer's output.

    Args:
        output: the layer's output for a batch.
        model: the network the layer belongs to (where the prefix tokens, the patch grid and
            a channels-last ``output_fmt`` are read from).
        layer: the layer (its own ``output_fmt`` wins over the model's).
        input_size: (H, W) of the input that gave ``output`` (the grid of a model with
            dynamic image sizes).
        layout: ``auto`` (or None), a kind (``nchw``, ``nhwc``, ``tokens``, ``ncl``), a
            callable (a custom layout), or a :class:`Layout` (used as it is).
        name: the layer's name, for messages.

    Returns:
        The layout, checked against ``output``.

    Raises:
        UserError: an output with no positions (a pooled vector), a token output whose count
            does not match the model's grid, a token layer of a model that does not give its
            grid, an unknown layout name.
    """
    if isinstance(layout, Layout):
        layout._check(output)
        return layout
    if callable(layout):
        found = Layout("custom", transform=layout)
        found.read(output[:1])
        return found
    spec = "auto" if layout is None else str(layout)
    if spec not in LAYOUTS:
        raise UserError(f"unknown layout {spec!r}; choose one of {LAYOUTS} or pass a callable")
    if not isinstance(output, Tensor):
        raise UserError(f"{name} must output one tensor, got {type(output).__name__}")
    if output.dim() < 3:
        raise UserError(f"{name} outputs {tuple(output.shape)}: no positions (a pooled vector?). Concepts "
                        "and maps need channels at positions: choose a layer before the pooling")
    if output.dim() > 4:
        raise UserError(f"{name} outputs {tuple(output.shape)}: only B x C x H x W, B x H x W x C, "
                        "B x T x D tokens and B x C x L are read; pass a layout callable")
    if spec == "auto":
        if output.dim() == 4:
            fmt = _output_fmt(layer) or _output_fmt(model)
            spec = "nhwc" if fmt == "NHWC" else "nchw"
        else:
            spec = "tokens" if is_token_model(model) else "ncl"
    if spec in ("nchw", "nhwc", "ncl"):
        found = Layout(spec)
        found._check(output)
        pos = found.read(output).shape[2:]
        if math.prod(pos) < 2:
            raise UserError(f"{name} outputs {tuple(output.shape)} ({spec}): fewer than 2 positions, so "
                            "concepts have none to cluster or locate; use a larger input or an earlier layer")
        return Layout(spec, grid=tuple(pos))
    grid = token_grid(model, input_size) if model is not None else None
    if grid is None:
        raise UserError(f"{name} outputs tokens {tuple(output.shape)} but the model does not give its patch "
                        "grid (timm's patch_embed, or a token_grid(input_size) method): pass a Layout with "
                        "the grid, or a layout callable")
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    found = Layout("tokens", grid=grid, prefix=prefix)
    found._check(output)
    return found


def layout_to_read(
    output: Tensor,
    *,
    model: nn.Module | None = None,
    layer: nn.Module | None = None,
    input_size: Sequence[int] | None = None,
    layout: LayoutSpec | Layout = "auto",
    name: str = "the layer",
) -> Layout | None:
    """The layout a cluster-map method must read a target layer's output with.

    None when the output is channels-first already (NCHW, NCL, or anything ``auto`` does not
    move): read it as it is, exactly as before layouts existed. Arguments as
    :func:`infer_layout`.
    """
    if layout is None or (isinstance(layout, str) and layout == "auto"):
        if not isinstance(output, Tensor) or output.dim() not in (3, 4):
            return None
        if output.dim() == 4 and (_output_fmt(layer) or _output_fmt(model)) != "NHWC":
            return None
        if output.dim() == 3 and not is_token_model(model):
            return None
    found = infer_layout(output, model=model, layer=layer, input_size=input_size, layout=layout, name=name)
    return None if found.kind in ("nchw", "ncl") else found
