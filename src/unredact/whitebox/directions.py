"""Per-layer censorship and refusal directions from last-token hidden states, saved as safetensors."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from unredact.engine import left_padded_positions
from unredact.errors import UnredactError
from unredact.whitebox.arch import model_device

FORMAT = "unredact.directions/1"
_EPS = 1e-12


@torch.no_grad()
def last_token_hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Residual stream at the last prompt token: float32 ``[batch, n_layers + 1, hidden]``.

    Index 0 is the embedding output, index ``i`` the output of decoder layer ``i - 1``. Inputs must be
    LEFT-padded so that position -1 is every row's last real token. Position ids are computed from
    the mask (``cumsum - 1``), as ``generate`` does, so a padded row sees the same positions as unpadded.
    """
    ids, mask = _left_padded(model, input_ids, attention_mask)
    return torch.stack([h[:, -1, :].to("cpu", torch.float32) for h in _all_hidden_states(model, ids, mask)], dim=1)


def _left_padded(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Ids and mask (all ones when None) on the model's device; one clear error unless LEFT-padded."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not bool(attention_mask[:, -1].all()):
        raise UnredactError("hidden states need LEFT-padded inputs: some rows end with padding")
    device = model_device(model)
    return input_ids.to(device), attention_mask.to(device)


def _all_hidden_states(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
    """Every layer's residual stream ``[batch, seq, hidden]`` (embeddings first), positions from the mask."""
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=left_padded_positions(mask),
        output_hidden_states=True,
        use_cache=False,
    )
    return tuple(out.hidden_states)


@torch.no_grad()
def answer_start_hidden_states(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    response_tokens: int = 0,
    eos_token_ids: Collection[int] = (),
) -> Tensor:
    """Mean residual stream over the last prompt token and the first ``response_tokens`` answer tokens.

    The answer tokens are the model's own greedy continuation (one uncached forward pass per token:
    ``response_tokens`` is meant to be small). A row that emits an end-of-sequence token stops there:
    that token counts, later positions are masked out and left out of its mean. Float32
    ``[batch, n_layers + 1, hidden]``; ``response_tokens=0`` is :func:`last_token_hidden_states`.
    Inputs must be LEFT-padded.
    """
    if response_tokens < 0:
        raise UnredactError(f"response_tokens must be >= 0, got {response_tokens}")
    if response_tokens == 0:
        return last_token_hidden_states(model, input_ids, attention_mask)
    ids, mask = _left_padded(model, input_ids, attention_mask)
    eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=ids.device)
    alive = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    counted = [alive.clone()]  # which of the averaged positions count, per row
    for _ in range(response_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask), use_cache=False)
        token = logits.logits[:, -1].argmax(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, alive.to(mask.dtype)[:, None]], dim=1)
        counted.append(alive.clone())
        alive = alive & ~torch.isin(token, eos)
    span = response_tokens + 1
    weights = torch.stack(counted, dim=1).to("cpu", torch.float32)  # [batch, span]
    states = torch.stack([h[:, -span:, :].to("cpu", torch.float32) for h in _all_hidden_states(model, ids, mask)], 1)
    return (states * weights[:, None, :, None]).sum(2) / weights.sum(1)[:, None, None]


def _unit(x: Tensor) -> Tensor:
    """x / ||x|| along the last axis; a (near-)zero vector stays zero."""
    norm = x.norm(dim=-1, keepdim=True)
    return torch.where(norm > _EPS, x / norm.clamp(min=_EPS), torch.zeros_like(x))


def compute_directions(
    sensitive: Tensor,
    control: Tensor,
    harmful: Tensor,
    harmless: Tensor,
    *,
    model_id: str = "",
    prompt_hashes: dict[str, str] | None = None,
    meta: dict[str, Any] | None = None,
) -> DirectionSet:
    """Censorship and harmful-refusal directions per layer from hidden states ``[n_i, L+1, H]``.

    Per layer (float64), with ``mu_X`` the mean over set X:
      r = unit(mu_harmful - mu_harmless)                      harmful-refusal direction
      u = unit(mu_harmless)                                   harmless mean direction
      c = mu_sensitive - mu_(control ∪ harmless)              pooled mean over both sets
      q1 = r, q2 = unit(u - (u·q1) q1)                        Gram-Schmidt basis of span{r, u}
      c <- c - (c·q1) q1 - (c·q2) q2                          so c ⟂ r and c ⟂ u exactly
      censorship = unit(c)
    A layer where c vanishes (e.g. the embedding of a shared last template token) gets a zero vector
    and is listed in ``meta["degenerate_layers"]``.
    """
    sets = {"sensitive": sensitive, "control": control, "harmful": harmful, "harmless": harmless}
    shape = sensitive.shape[1:]
    for name, t in sets.items():
        if t.dim() != 3 or t.shape[1:] != shape or t.shape[0] == 0:
            raise UnredactError(f"{name} hidden states must be non-empty [n, L+1, H] like {tuple(shape)}")
    s, c, h, hl = (t.to(torch.float64) for t in (sensitive, control, harmful, harmless))
    mu_harmless = hl.mean(0)
    refusal = _unit(h.mean(0) - mu_harmless)
    q1 = refusal
    u = _unit(mu_harmless)
    q2 = _unit(u - (u * q1).sum(-1, keepdim=True) * q1)
    diff = s.mean(0) - torch.cat([c, hl], dim=0).mean(0)
    diff = diff - (diff * q1).sum(-1, keepdim=True) * q1
    diff = diff - (diff * q2).sum(-1, keepdim=True) * q2
    censorship = _unit(diff)
    degenerate = [i for i in range(censorship.shape[0]) if float(censorship[i].norm()) == 0.0]
    info = dict(meta or {})
    info.update(
        {
            "counts": {k: int(v.shape[0]) for k, v in sets.items()},
            "degenerate_layers": degenerate,
            "raw_diff_norm": [float(x) for x in (s.mean(0) - torch.cat([c, hl], 0).mean(0)).norm(dim=-1)],
        }
    )
    return DirectionSet(
        censorship=censorship.to(torch.float32),
        refusal=refusal.to(torch.float32),
        model_id=model_id,
        n_layers=int(shape[0]) - 1,
        hidden_size=int(shape[1]),
        prompt_hashes=dict(prompt_hashes or {}),
        meta=info,
    )


@dataclass
class DirectionSet:
    """Unit directions per hidden-state index (0 = embeddings, i = after decoder layer i-1)."""

    censorship: Tensor
    refusal: Tensor
    model_id: str
    n_layers: int
    hidden_size: int
    prompt_hashes: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = (self.n_layers + 1, self.hidden_size)
        for name in ("censorship", "refusal"):
            t = getattr(self, name)
            if tuple(t.shape) != expected:
                raise UnredactError(
                    f"direction set: {name} has shape {tuple(t.shape)}, metadata says {expected} "
                    "(n_layers + 1, hidden_size)"
                )

    def for_layer(self, layer_idx: int) -> Tensor:
        """Direction for the weights of decoder layer ``layer_idx``: the residual it writes into (i+1)."""
        return self.censorship[layer_idx + 1]

    def interpolated(self, index: float) -> Tensor:
        """Unit direction at fractional hidden-state ``index`` in [0, n_layers].

        v = unit((1 - f) d[floor(index)] + f d[floor(index) + 1]), f = index - floor(index).
        """
        if not (math.isfinite(index) and 0.0 <= index <= self.n_layers):
            raise UnredactError(f"direction index {index} outside [0, {self.n_layers}]")
        lo = min(math.floor(index), self.n_layers)
        hi = min(lo + 1, self.n_layers)
        frac = index - lo
        mixed = (1.0 - frac) * self.censorship[lo].double() + frac * self.censorship[hi].double()
        return _unit(mixed).to(torch.float32)

    def mixed(self, refusal_mix: float) -> DirectionSet:
        """The set with ``censorship`` turned toward the refusal direction by ``refusal_mix`` in [0, 1].

        Per index: unit((1 - m) c + m r). ``m = 0`` is the targeted direction (orthogonal to refusal:
        safety refusals are untouched, but a model whose political refusals run through the same
        refusal mechanism keeps refusing); ``m = 1`` is the plain refusal direction (every refusal goes,
        as with an undifferentiated ablation). The search chooses ``m`` against the harm-loss objective.
        """
        if not (0.0 <= refusal_mix <= 1.0):
            raise UnredactError(f"refusal_mix {refusal_mix} outside [0, 1]")
        if refusal_mix == 0.0:
            return self
        mixed = _unit((1.0 - refusal_mix) * self.censorship.double() + refusal_mix * self.refusal.double())
        return DirectionSet(
            censorship=mixed.to(torch.float32),
            refusal=self.refusal,
            model_id=self.model_id,
            n_layers=self.n_layers,
            hidden_size=self.hidden_size,
            prompt_hashes=self.prompt_hashes,
            meta={**self.meta, "refusal_mix": refusal_mix},
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``censorship`` and ``refusal`` tensors plus JSON metadata in the safetensors header."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT,
            "model_id": self.model_id,
            "n_layers": str(self.n_layers),
            "hidden_size": str(self.hidden_size),
            "prompt_hashes": json.dumps(self.prompt_hashes, sort_keys=True),
            "meta": json.dumps(self.meta, sort_keys=True, default=str),
        }
        tensors = {
            "censorship": self.censorship.detach().to("cpu", torch.float32).contiguous(),
            "refusal": self.refusal.detach().to("cpu", torch.float32).contiguous(),
        }
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=header)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DirectionSet:
        path = Path(path)
        if not path.is_file():
            raise UnredactError(f"no direction file at {path}")
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise UnredactError(f"{path} is not an unredact direction file (format {header.get('format')!r})")
            keys = set(f.keys())
            if keys != {"censorship", "refusal"}:
                raise UnredactError(f"{path}: expected tensors censorship and refusal, found {sorted(keys)}")
            censorship, refusal = f.get_tensor("censorship"), f.get_tensor("refusal")
        try:
            n_layers, hidden = int(header["n_layers"]), int(header["hidden_size"])
            prompt_hashes = json.loads(header.get("prompt_hashes", "{}"))
            meta = json.loads(header.get("meta", "{}"))
        except (KeyError, ValueError) as err:
            raise UnredactError(f"{path}: malformed direction metadata ({err})") from err
        return cls(
            censorship=censorship,
            refusal=refusal,
            model_id=header.get("model_id", ""),
            n_layers=n_layers,
            hidden_size=hidden,
            prompt_hashes=prompt_hashes,
            meta=meta,
        )
