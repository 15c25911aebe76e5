"""The `unredact finetune` command (mounted by unredact.cli); torch and peft load only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unredact.errors import UnredactError


def _help(name: str) -> str:
    from unredact.finetune.run import FinetuneSettings

    return FinetuneSettings.model_fields[name].description or ""


def finetune(
    model: Annotated[str, typer.Option("--model", "-m", help=_help("model"))] = "demo/qwen2.5-coder-0.5b",
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/finetune"),
    probes: Annotated[str, typer.Option(help=_help("probes"))] = "default",
    gold: Annotated[str, typer.Option(help=_help("gold"))] = "default",
    seed: Annotated[int, typer.Option(help=_help("seed"))] = 0,
    dtype: Annotated[str, typer.Option(help=_help("dtype"))] = "auto",
    device: Annotated[str, typer.Option(help=_help("device"))] = "auto",
    batch_size: Annotated[int, typer.Option(help=_help("batch_size"))] = 8,
    system_prompt: Annotated[str | None, typer.Option(help=_help("system_prompt"))] = None,
    eval_sensitive: Annotated[int, typer.Option(help=_help("eval_sensitive"))] = 48,
    eval_harmful: Annotated[int, typer.Option(help=_help("eval_harmful"))] = 12,
    eval_other: Annotated[int, typer.Option(help=_help("eval_other"))] = 8,
    max_new_tokens: Annotated[int, typer.Option(help=_help("max_new_tokens"))] = 128,
    retain_max_new_tokens: Annotated[int, typer.Option(help=_help("retain_max_new_tokens"))] = 128,
    harmful_repeat: Annotated[int, typer.Option(help=_help("harmful_repeat"))] = 2,
    epochs: Annotated[int, typer.Option(help=_help("epochs"))] = 2,
    lr: Annotated[float, typer.Option(help=_help("lr"))] = 2e-4,
    train_batch_size: Annotated[int, typer.Option(help=_help("train_batch_size"))] = 8,
    micro_batch_size: Annotated[int, typer.Option(help=_help("micro_batch_size"))] = 8,
    max_length: Annotated[int, typer.Option(help=_help("max_length"))] = 384,
    lora_rank: Annotated[int, typer.Option(help=_help("lora_rank"))] = 16,
    lora_alpha: Annotated[float, typer.Option(help=_help("lora_alpha"))] = 32.0,
    lora_dropout: Annotated[float, typer.Option(help=_help("lora_dropout"))] = 0.05,
    lora_targets: Annotated[str, typer.Option(help=_help("lora_targets"))] = "all-linear",
    lora_layers: Annotated[str, typer.Option(help=_help("lora_layers"))] = "all",
    checkpoint_every: Annotated[int, typer.Option(help=_help("checkpoint_every"))] = 20,
    preference_weight: Annotated[float, typer.Option(help=_help("preference_weight"))] = 0.0,
    preference_probes: Annotated[int, typer.Option(help=_help("preference_probes"))] = 144,
    retain_kl_weight: Annotated[float, typer.Option(help=_help("retain_kl_weight"))] = 0.0,
    retain_harmful: Annotated[bool, typer.Option(help=_help("retain_harmful"))] = False,
    reject_fabrication: Annotated[bool, typer.Option(help=_help("reject_fabrication"))] = False,
    fact_weight: Annotated[float, typer.Option(help=_help("fact_weight"))] = 1.0,
    judge: Annotated[str, typer.Option(help=_help("judge"))] = "auto",
    verify: Annotated[str, typer.Option(help=_help("verify"))] = "quick",
    arch: Annotated[str | None, typer.Option(help=_help("arch"))] = None,
) -> None:
    """Fine-tune political censorship away (LoRA SFT on candid gold answers), keeping safety refusals.

    Baseline audit (test) -> the model's own harmless answers (with --retain-harmful, also its refusals of
    harmful requests) -> (with --preference-weight) its censored answers to train prompts, to reject ->
    LoRA training -> audit (test) -> export to OUT/model and OUT/adapter -> verify against the original
    in OUT/verify. Re-run to resume.
    """
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise UnredactError("finetune needs peft: pip install 'unredact[hf,remove]'") from exc
    from unredact.finetune.run import run_finetune

    run_finetune(
        model,
        out,
        probes=probes,
        gold=gold,
        seed=seed,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        system_prompt=system_prompt,
        eval_sensitive=eval_sensitive,
        eval_harmful=eval_harmful,
        eval_other=eval_other,
        max_new_tokens=max_new_tokens,
        retain_max_new_tokens=retain_max_new_tokens,
        harmful_repeat=harmful_repeat,
        epochs=epochs,
        lr=lr,
        train_batch_size=train_batch_size,
        micro_batch_size=micro_batch_size,
        max_length=max_length,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=lora_targets,
        lora_layers=lora_layers,
        checkpoint_every=checkpoint_every,
        preference_weight=preference_weight,
        preference_probes=preference_probes,
        retain_kl_weight=retain_kl_weight,
        retain_harmful=retain_harmful,
        reject_fabrication=reject_fabrication,
        fact_weight=fact_weight,
        judge=judge,
        verify=verify,
        arch=arch,
    )
