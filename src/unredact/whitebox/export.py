"""Write an edited model as a standard transformers directory, atomically, and check it reloads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unredact.errors import UnredactError
from unredact.rundir import atomic_dir
from unredact.whitebox.arch import model_device


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
def _logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
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
    expected = _logits(model, input_ids, attention_mask)
    got = _logits(reloaded, input_ids, attention_mask)
    if expected.shape != got.shape:
        raise UnredactError(f"reloaded model gives logits {tuple(got.shape)}, expected {tuple(expected.shape)}")
    return float((expected - got).abs().max())


def export_checked(backend: Any, model_dir: Path, card: str) -> float:
    """Export a loaded backend's (edited) model with ``card`` as README.md, replacing ``model_dir``, and
    return the reload check's max |logit difference| on three chat prompts (English, Chinese, French)."""
    from unredact.ui import console
    from unredact.whitebox.objectives import chats_for

    console.print(f"exporting merged safetensors to {model_dir}")
    export_model(backend.model, backend.tokenizer, model_dir, extra_files={"README.md": card}, overwrite=True)
    ids, mask = backend.encode_chats(chats_for(["What happened in Beijing in June 1989?", "你好！", "Bonjour !"]))
    diff = check_reload(model_dir, backend.model, ids, mask)
    console.print(f"reload check: max |Δlogit| = {diff:.3g}")
    return diff
