"""Write an edited model as a standard transformers directory (and its rank-1 edit as a PEFT adapter),
atomically, and check that each reloads to the same logits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unredact.errors import UnredactError
from unredact.rundir import ADAPTER_WEIGHTS, atomic_dir
from unredact.whitebox.arch import model_device

#: chats whose logits the export checks compare (English, Chinese, French)
CHECK_PROMPTS = ("What happened in Beijing in June 1989?", "你好！", "Bonjour !")


def _check_extra_name(name: str) -> None:
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise UnredactError(f"extra file name {name!r} must be a plain file name (no directories)")


def export_model(
    model: nn.Module,
    tokenizer: Any | None,
    out_dir: str | os.PathLike[str],
    max_shard_size: str | int = "500MB",
    extra_files: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``model`` (+ tokenizer, + extra text files) as sharded safetensors into ``out_dir``.

    Everything is written into a temporary sibling directory first, then moved into place with one
    ``os.rename``, so ``out_dir`` is never seen half-written. An existing non-empty ``out_dir`` is an
    error unless ``overwrite``: it is then renamed aside, the new directory renamed in, and the old one
    deleted (restored if the second rename fails). Any weight edits must already be in the model.
    """
    for name in extra_files or {}:
        _check_extra_name(name)
    out = Path(out_dir).absolute()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)  # type: ignore[operator]
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        if not any(tmp.glob("*.safetensors")):
            raise UnredactError(f"save_pretrained wrote no safetensors files into {tmp}")
    return out


@torch.no_grad()
def model_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        mask = attention_mask.to(device) if attention_mask is not None else None
        out = model(input_ids=input_ids.to(device), attention_mask=mask, use_cache=False)
    finally:
        model.train(was_training)
    return out.logits.to("cpu", torch.float32)


def check_reload(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
) -> float:
    """Max |logit difference| between the in-memory ``model`` and ``out_dir`` reloaded as the same class.

    The reload uses the model's dtype and the CPU (it briefly needs a second copy of the weights).
    """
    loader = type(model).from_pretrained  # type: ignore[attr-defined]
    dtype = next(model.parameters()).dtype
    reloaded = loader(str(out_dir), dtype=dtype)
    expected = model_logits(model, input_ids, attention_mask)
    got = model_logits(reloaded, input_ids, attention_mask)
    return compare_logits(expected, got, attention_mask)["max_abs_diff"]


def export_checked(backend: Any, model_dir: Path, card: str) -> float:
    """Export a loaded backend's (edited) model with ``card`` as README.md, replacing ``model_dir``, and
    return the reload check's max |logit difference| on three chat prompts (English, Chinese, French)."""
    from unredact.ui import console
    from unredact.whitebox.objectives import chats_for

    console.print(f"exporting merged safetensors to {model_dir}")
    export_model(backend.model, backend.tokenizer, model_dir, extra_files={"README.md": card}, overwrite=True)
    ids, mask = backend.encode_chats(chats_for(list(CHECK_PROMPTS)))
    diff = check_reload(model_dir, backend.model, ids, mask)
    console.print(f"reload check: max |Δlogit| = {diff:.3g}")
    return diff


def adapter_tensors(factors: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """PEFT LoRA tensors for rank-1 deltas ``ΔW = B @ A`` keyed by weight name (``...o_proj.weight``).

    Each edited ``nn.Linear`` ``M`` gets ``base_model.model.M.lora_A.weight`` = A (1, in) and
    ``...lora_B.weight`` = B (out, 1); with r = lora_alpha = 1 PEFT adds exactly ``B @ A``. Stacked
    expert weights (3-D) are not Linear modules and have no such form.
    """
    if not factors:
        raise UnredactError("the edit changes no weight: there is no adapter to write")
    tensors: dict[str, Tensor] = {}
    for name, (a, b) in factors.items():
        if not name.endswith(".weight") or a.dim() != 2 or b.dim() != 2:
            raise UnredactError(f"{name} is a stacked expert weight: no PEFT LoRA form (use the merged model)")
        module = name.removesuffix(".weight")
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.detach().to("cpu", torch.float32).contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.detach().to("cpu", torch.float32).contiguous()
    return tensors


def export_adapter(
    factors: dict[str, tuple[Tensor, Tensor]], out_dir: str | os.PathLike[str], base_model: str = ""
) -> Path:
    """Write rank-1 deltas as a PEFT LoRA adapter directory (config + safetensors), atomically.

    ``target_modules`` lists the full module names, so only the edited layers get adapters.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    tensors = adapter_tensors(factors)
    modules = sorted({key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for key in tensors})
    config = LoraConfig(
        r=1,
        lora_alpha=1,
        lora_dropout=0.0,
        bias="none",
        target_modules=modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model or None,
    )
    out = Path(out_dir).absolute()
    with atomic_dir(out, overwrite=True) as tmp:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out


def compare_logits(expected: Tensor, got: Tensor, attention_mask: Tensor | None = None) -> dict[str, float]:
    """How closely ``got`` reproduces ``expected`` (``[batch, seq, vocab]``) at the unpadded positions:
    max |Δlogit|, mean KL(expected ‖ got) of the next-token distributions, share of equal argmax tokens."""
    if expected.shape != got.shape:
        raise UnredactError(f"logits {tuple(got.shape)} where {tuple(expected.shape)} were expected")
    keep = attention_mask.bool() if attention_mask is not None else torch.ones(expected.shape[:2], dtype=torch.bool)
    e, g = expected[keep].float(), got[keep].float()
    log_e, log_g = e.log_softmax(-1), g.log_softmax(-1)
    kl = (log_e.exp() * (log_e - log_g)).sum(-1)
    return {
        "max_abs_diff": float((e - g).abs().max()),
        "mean_kl": float(kl.mean()),
        "argmax_agreement": float((e.argmax(-1) == g.argmax(-1)).float().mean()),
    }


def compare_with_adapter(
    base_model: nn.Module, adapter_dir: str | os.PathLike[str], input_ids: Tensor, attention_mask: Tensor | None,
    expected: Tensor,
) -> dict[str, float]:  # fmt: skip
    """:func:`compare_logits` of ``expected`` with the unedited ``base_model`` plus the adapter.

    The adapter is injected into ``base_model`` in place for the check and removed again afterwards
    (the same parameter objects stay in the model).
    """
    from peft import PeftModel

    wrapped = PeftModel.from_pretrained(base_model, str(adapter_dir))
    try:
        got = model_logits(wrapped, input_ids, attention_mask)
    finally:
        wrapped.unload()
    return compare_logits(expected, got, attention_mask)
