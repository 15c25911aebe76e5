"""Explicit per-architecture table of where decoder layers and residual-stream writers live."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from unredact.errors import UnredactError

OVERRIDE_HINT = "--arch layers=model.layers,attn_out=self_attn.o_proj,mlp_out=mlp.down_proj"
OVERRIDE_KEYS = ("layers", "attn_out", "mlp_out", "norm", "embed")


@dataclass(frozen=True)
class ArchSpec:
    """Module paths for one architecture.

    ``layers``, ``norm`` and ``embed`` are dotted paths from the model root (the object
    ``from_pretrained`` returns). ``writers`` maps a writer name to a dotted path from one decoder
    layer; each writer is a weight that writes into the residual stream, laid out as
    ``(..., out=hidden, in)``: an ``nn.Linear`` (its ``.weight``) or a stacked expert parameter of shape
    ``(n_experts, hidden, in)``. A writer's group is its name up to the first dot: ``attn`` or ``mlp``.
    """

    model_type: str
    layers: str
    writers: dict[str, str]
    norm: str | None = "model.norm"
    embed: str | None = "model.embed_tokens"
    notes: tuple[str, ...] = field(default=())

    def groups(self) -> set[str]:
        return {name.split(".")[0] for name in self.writers}


def _dense(model_type: str, prefix: str = "model") -> ArchSpec:
    return ArchSpec(
        model_type=model_type,
        layers=f"{prefix}.layers",
        writers={"attn": "self_attn.o_proj", "mlp": "mlp.down_proj"},
        norm=f"{prefix}.norm",
        embed=f"{prefix}.embed_tokens",
    )


# transformers >= 5 stores MoE experts as one stacked parameter ``experts.down_proj`` of shape
# (n_experts, hidden, moe_intermediate): the same (out, in) layout per expert, so one batched edit
# covers every expert. qwen2_moe also has an always-on shared expert with an ordinary Linear.
ARCHITECTURES: dict[str, ArchSpec] = {
    spec.model_type: spec
    for spec in (
        _dense("qwen2"),
        _dense("qwen3"),
        _dense("llama"),
        _dense("mistral"),
        _dense("ministral3"),
        _dense("gemma"),
        _dense("gemma2"),
        _dense("gemma3_text"),
        _dense("phi3"),
        _dense("olmo2"),
        _dense("olmo3"),
        _dense("granite"),
        _dense("ernie4_5"),
        _dense("internlm3"),
        replace(_dense("gemma3", prefix="model.language_model"), notes=("text decoder of the VLM wrapper",)),
        ArchSpec(
            model_type="internlm2",
            layers="model.layers",
            writers={"attn": "attention.wo", "mlp": "feed_forward.w2"},
            norm="model.norm",
            embed="model.tok_embeddings",
            notes=("remote-code layout; needs trust_remote_code to load",),
        ),
        ArchSpec(
            model_type="qwen2_moe",
            layers="model.layers",
            writers={
                "attn": "self_attn.o_proj",
                "mlp.shared": "mlp.shared_expert.down_proj",
                "mlp.experts": "mlp.experts.down_proj",
            },
        ),
        ArchSpec(
            model_type="qwen3_moe",
            layers="model.layers",
            writers={"attn": "self_attn.o_proj", "mlp.experts": "mlp.experts.down_proj"},
        ),
    )
}


def parse_arch_override(text: str) -> dict[str, Any]:
    """Parse ``layers=...,attn_out=...,mlp_out=a+b,norm=...,embed=...`` into a dict.

    ``mlp_out`` may name several writers joined by ``+`` (e.g. shared expert and experts); it is
    returned as a list. Every key is optional here; :func:`resolve_arch` checks what is missing.
    """
    out: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise UnredactError(f"bad --arch item {item!r}: expected key=value, e.g. {OVERRIDE_HINT}")
        if key not in OVERRIDE_KEYS:
            raise UnredactError(f"unknown --arch key {key!r}: expected one of {', '.join(OVERRIDE_KEYS)}")
        if key in out:
            raise UnredactError(f"--arch key {key!r} given twice")
        out[key] = [v.strip() for v in value.split("+") if v.strip()] if key == "mlp_out" else value
    return out


def model_type_of(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise UnredactError(f"{type(model).__name__} has no config.model_type; pass --arch ({OVERRIDE_HINT})")
    return model_type


def _spec_from_override(model_type: str, base: ArchSpec | None, override: dict[str, Any]) -> ArchSpec:
    unknown = set(override) - set(OVERRIDE_KEYS)
    if unknown:
        raise UnredactError(f"unknown --arch key(s) {sorted(unknown)}: expected {', '.join(OVERRIDE_KEYS)}")
    if base is None:
        missing = [k for k in ("layers", "attn_out", "mlp_out") if k not in override]
        if missing:
            raise UnredactError(
                f"--arch for unknown model_type {model_type!r} needs {', '.join(missing)} ({OVERRIDE_HINT})"
            )
        base = ArchSpec(model_type=model_type, layers="", writers={}, norm=None, embed=None)
    writers = dict(base.writers)
    if "attn_out" in override:
        writers["attn"] = str(override["attn_out"])
    if "mlp_out" in override:
        mlp = override["mlp_out"]
        paths = [mlp] if isinstance(mlp, str) else list(mlp)
        writers = {k: v for k, v in writers.items() if k.split(".")[0] != "mlp"}
        if len(paths) == 1:
            writers["mlp"] = paths[0]
        else:
            writers.update({f"mlp.{i}": p for i, p in enumerate(paths)})
    return replace(
        base,
        layers=str(override.get("layers", base.layers)),
        writers=writers,
        norm=override.get("norm", base.norm),
        embed=override.get("embed", base.embed),
    )


def get_path(root: nn.Module, path: str) -> Any | None:
    """Follow a dotted attribute path (numeric parts index into ModuleLists); None if absent."""
    obj: Any = root
    for part in path.split("."):
        if part.isdigit() and isinstance(obj, nn.ModuleList | nn.Sequential):
            index = int(part)
            if index >= len(obj):
                return None
            obj = obj[index]
        else:
            obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def resolve_arch(model: nn.Module, override: dict[str, Any] | None = None) -> ArchSpec:
    """Return the table entry for ``model.config.model_type`` (merged with ``override``) and check it.

    The check is explicit: the layers path must be a ModuleList, and every writer of layer 0 must be an
    ``nn.Linear`` or a parameter of rank >= 2 whose ``out`` axis (-2) equals the hidden size.
    """
    model_type = model_type_of(model)
    base = ARCHITECTURES.get(model_type)
    if override:
        spec = _spec_from_override(model_type, base, override)
    elif base is None:
        raise UnredactError(f"unsupported model_type {model_type!r}: pass its module paths, e.g. {OVERRIDE_HINT}")
    else:
        spec = base
    _check(model, spec)
    return spec


def arch_from_text(model: nn.Module, override: str | None) -> ArchSpec:
    """The model's table entry with an ``--arch`` override (``layers=...,attn_out=...``) applied when given."""
    return resolve_arch(model, parse_arch_override(override) if override else None)


def _check(model: nn.Module, spec: ArchSpec) -> None:
    layers = get_path(model, spec.layers)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UnredactError(
            f"{spec.model_type}: {spec.layers!r} is not a non-empty ModuleList of decoder layers "
            f"in {type(model).__name__}; pass --arch ({OVERRIDE_HINT})"
        )
    hidden = hidden_size(model)
    for name, path in spec.writers.items():
        weight = _writer_weight(layers[0], path)
        if weight is None or weight.shape[-2] != hidden:
            raise UnredactError(
                f"{spec.model_type}: writer {name}={path!r} in layer 0 is not a Linear/weight writing "
                f"{hidden} hidden features; pass --arch ({OVERRIDE_HINT})"
            )


def _writer_weight(layer: nn.Module, path: str) -> nn.Parameter | None:
    obj = get_path(layer, path)
    if isinstance(obj, nn.Linear):
        return obj.weight
    if isinstance(obj, nn.Parameter) and obj.dim() >= 2:
        return obj
    return None


def hidden_size(model: nn.Module) -> int:
    config = model.config  # type: ignore[attr-defined]
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def decoder_layers(model: nn.Module, arch: ArchSpec | None = None) -> list[nn.Module]:
    spec = arch or resolve_arch(model)
    layers = get_path(model, spec.layers)
    if not isinstance(layers, nn.ModuleList):
        raise UnredactError(f"{spec.model_type}: {spec.layers!r} is not a ModuleList ({OVERRIDE_HINT})")
    return list(layers)


def residual_writers(
    model: nn.Module, layer_idx: int, arch: ArchSpec | None = None
) -> dict[str, tuple[str, nn.Parameter]]:
    """Writer name -> (full parameter name, weight of shape (..., hidden, in)) for one decoder layer."""
    spec = arch or resolve_arch(model)
    layers = decoder_layers(model, spec)
    if not 0 <= layer_idx < len(layers):
        raise UnredactError(f"layer {layer_idx} out of range: model has {len(layers)} decoder layers")
    out: dict[str, tuple[str, nn.Parameter]] = {}
    for name, path in spec.writers.items():
        weight = _writer_weight(layers[layer_idx], path)
        if weight is None:
            raise UnredactError(f"{spec.model_type}: layer {layer_idx} has no writer {path!r} ({OVERRIDE_HINT})")
        is_linear = isinstance(get_path(layers[layer_idx], path), nn.Linear)
        full = f"{spec.layers}.{layer_idx}.{path}" + (".weight" if is_linear else "")
        out[name] = (full, weight)
    return out


def output_projections(model: nn.Module, layer_idx: int, arch: ArchSpec | None = None) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` residual writers of one layer: ``{"attn": o_proj, "mlp": down_proj}`` when dense.

    Stacked expert parameters are not Linear modules and are left out here; use
    :func:`residual_writers` for every weight that an ablation edits.
    """
    spec = arch or resolve_arch(model)
    layer = decoder_layers(model, spec)[layer_idx]
    out: dict[str, nn.Linear] = {}
    for name, path in spec.writers.items():
        module = get_path(layer, path)
        if isinstance(module, nn.Linear):
            out[name] = module
    return out


def embedding(model: nn.Module, arch: ArchSpec | None = None) -> nn.Module | None:
    spec = arch or resolve_arch(model)
    return get_path(model, spec.embed) if spec.embed else None


def final_norm(model: nn.Module, arch: ArchSpec | None = None) -> nn.Module | None:
    spec = arch or resolve_arch(model)
    return get_path(model, spec.norm) if spec.norm else None


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where input ids must go, also under a device map)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if isinstance(embed, nn.Module):
        return next(embed.parameters()).device
    return next(model.parameters()).device
