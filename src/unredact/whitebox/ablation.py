"""Directional ablation of residual-stream writers as resettable rank-1 weight edits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unredact.errors import UnredactError
from unredact.whitebox.arch import ArchSpec, decoder_layers, hidden_size, residual_writers, resolve_arch
from unredact.whitebox.directions import DirectionSet

_EPS = 1e-12


def _unit_vector(v: Tensor) -> Tensor | None:
    v = v.detach().to(torch.float32).reshape(-1)
    norm = v.norm()
    return None if float(norm) <= _EPS else v / norm


def orthogonal_projection_delta(W: Tensor, v: Tensor, weight: float) -> Tensor:
    """ΔW = -weight · v̂ (v̂ᵀ W), in float32, for W of shape (..., out, in) and v of shape (out,).

    v̂ = v / ||v||. ``W + ΔW`` removes a fraction ``weight`` of every column's component along v̂:
    the layer then writes (1 - weight) of its former v̂-component into the residual stream.
    Leading axes of W (stacked experts) are edited independently. A zero v gives ΔW = 0.
    """
    if W.dim() < 2 or W.shape[-2] != v.numel():
        raise ValueError(f"W {tuple(W.shape)} must be (..., out, in) with out == len(v) == {v.numel()}")
    Wf = W.detach().to(torch.float32)
    v_hat = _unit_vector(v.to(W.device))
    if v_hat is None:
        return torch.zeros_like(Wf)
    vT_W = torch.einsum("o,...oi->...i", v_hat, Wf)  # v̂ᵀ W: (..., in)
    return -float(weight) * v_hat[:, None] * vT_W[..., None, :]  # outer product per leading index


def ablate(W: Tensor, v: Tensor, weight: float) -> Tensor:
    """W' = W - weight · v̂ (v̂ᵀ W), computed in float32 and returned in W's dtype."""
    return (W.detach().to(torch.float32) + orthogonal_projection_delta(W, v, weight)).to(W.dtype)


def ablate_norm_preserving(W: Tensor, v: Tensor, weight: float) -> Tensor:
    """Ablate, then give every column its original norm back.

    Column j is W[..., :, j] (out,), what input feature j writes into the residual stream. With
    W' = W - weight · v̂ (v̂ᵀ W):  W''[:, j] = W'[:, j] · ||W[:, j]|| / ||W'[:, j]||, and a column whose
    ablated norm is (near) zero is left as W'[:, j]. Rescaling keeps directions, so for weight = 1
    v̂ᵀ W'' = 0 still holds; only the magnitudes the ablation shrank are restored.
    """
    Wf = W.detach().to(torch.float32)
    ablated = Wf + orthogonal_projection_delta(W, v, weight)
    before = Wf.norm(dim=-2, keepdim=True)
    after = ablated.norm(dim=-2, keepdim=True)
    scale = torch.where(after > 1e-8, before / after.clamp(min=1e-8), torch.ones_like(after))
    return (ablated * scale).to(W.dtype)


def layer_weight_kernel(n_layers: int, peak: float, width: float, min_w: float, max_w: float) -> list[float]:
    """Ablation weight per decoder layer: a triangle of height ``max_w`` centred on ``peak``.

    For layer l in 0..n_layers-1, with d = |l - peak| (peak may be fractional):
      w_l = max_w + (min_w - max_w) · d / width   if d <= width
      w_l = 0                                     if d >  width
    so w = max_w at the peak, falls linearly to min_w at distance ``width``, and is 0 beyond.
    """
    if n_layers <= 0:
        raise ValueError("n_layers must be positive")
    if width <= 0:
        raise ValueError("width must be positive")
    weights = []
    for layer in range(n_layers):
        d = abs(layer - peak)
        weights.append(max_w + (min_w - max_w) * d / width if d <= width else 0.0)
    return weights


@dataclass(frozen=True)
class _Target:
    layer: int
    group: str  # "attn" or "mlp"
    name: str  # full parameter name in the model
    param: nn.Parameter


class AblationDeltas:
    """Edits a model's residual writers in place and can restore them bit-exactly.

    ``apply`` always starts from the saved originals, so applying twice equals applying once; edits
    never stack. The model is modified in place (merged) while applied; ``reset`` undoes it and
    ``commit`` forgets the originals (the edit becomes permanent, e.g. before export).
    """

    def __init__(self, model: nn.Module, arch: ArchSpec | None = None) -> None:
        self.model = model
        self.arch = arch or resolve_arch(model)
        self.n_layers = len(decoder_layers(model, self.arch))
        self.hidden_size = hidden_size(model)
        self._targets = [
            _Target(layer, writer.split(".")[0], full, param)
            for layer in range(self.n_layers)
            for writer, (full, param) in residual_writers(model, layer, self.arch).items()
        ]
        unknown = {t.group for t in self._targets} - {"attn", "mlp"}
        if unknown:
            raise UnredactError(f"writer groups must be attn or mlp, got {sorted(unknown)}")
        self._originals: dict[str, Tensor] = {}
        self._factors: dict[str, tuple[Tensor, Tensor]] = {}
        self.applied: dict[str, Any] | None = None

    @property
    def is_applied(self) -> bool:
        return self.applied is not None

    def target_names(self) -> list[str]:
        return [t.name for t in self._targets]

    @torch.no_grad()
    def apply(
        self,
        directions: DirectionSet,
        attn_weights: list[float],
        mlp_weights: list[float],
        direction_index: float | None = None,
        norm_preserving: bool = False,
    ) -> None:
        """Set each writer of layer l to W - w_l · v (vᵀ W) from its original W (reset first).

        v is ``directions.for_layer(l)`` (the residual stream layer l writes into) or, when
        ``direction_index`` is given, one global ``directions.interpolated(direction_index)``.
        w_l is ``attn_weights[l]`` for attention writers and ``mlp_weights[l]`` for MLP writers; a zero
        weight or a zero direction leaves the weight untouched (and uncopied).
        """
        if directions.n_layers != self.n_layers or directions.hidden_size != self.hidden_size:
            raise UnredactError(
                f"directions are for {directions.n_layers} layers x {directions.hidden_size}, model has "
                f"{self.n_layers} x {self.hidden_size}"
            )
        for name, ws in (("attn_weights", attn_weights), ("mlp_weights", mlp_weights)):
            if len(ws) != self.n_layers:
                raise UnredactError(f"{name} has {len(ws)} entries, model has {self.n_layers} layers")
        self.reset()
        edit = ablate_norm_preserving if norm_preserving else ablate
        global_v = directions.interpolated(direction_index) if direction_index is not None else None
        for target in self._targets:
            w = float((attn_weights if target.group == "attn" else mlp_weights)[target.layer])
            v = global_v if global_v is not None else directions.for_layer(target.layer)
            v_hat = _unit_vector(v)
            if w == 0.0 or v_hat is None:
                continue
            v_hat = v_hat.to(target.param.device)
            original = target.param.detach().clone()
            self._originals[target.name] = original
            target.param.copy_(edit(original, v_hat, w))
            # Rank-1 factors of ΔW = B @ A: A = v̂ᵀ W (..., 1, in), B = -w v̂ (out, 1).
            vT_W = torch.einsum("o,...oi->...i", v_hat, original.to(torch.float32))
            self._factors[target.name] = (vT_W.unsqueeze(-2), (-w * v_hat)[:, None])
        self.applied = {
            "model_id": directions.model_id,
            "attn_weights": [float(x) for x in attn_weights],
            "mlp_weights": [float(x) for x in mlp_weights],
            "direction_index": direction_index,
            "norm_preserving": norm_preserving,
        }

    @torch.no_grad()
    def reset(self) -> None:
        """Copy every saved original back (bit-exact) and forget the edit."""
        params = {t.name: t.param for t in self._targets}
        for name, original in self._originals.items():
            params[name].copy_(original)
        self._originals.clear()
        self._factors.clear()
        self.applied = None

    def commit(self) -> None:
        """Keep the current edit permanently and free the saved originals (``reset`` becomes a no-op)."""
        self._originals.clear()
        self._factors.clear()
        self.applied = None

    def as_lora(self, rank: int = 1) -> dict[str, tuple[Tensor, Tensor]]:
        """Per edited weight, float32 factors (A, B) with ΔW = B @ A (A: (..., 1, in), B: (out, 1)).

        Keys are full parameter names. Only the plain (not norm-preserving) edit is rank-1.
        """
        if rank != 1:
            raise ValueError("directional ablation deltas are rank-1; only rank=1 is available")
        if self.applied is None:
            raise UnredactError("no ablation applied: nothing to export as LoRA")
        if self.applied["norm_preserving"]:
            raise UnredactError("norm-preserving edits are not rank-1; export the merged model instead")
        return {name: (a.clone(), b.clone()) for name, (a, b) in self._factors.items()}
