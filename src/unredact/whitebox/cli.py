"""The `unredact remove` command (mounted by unredact.cli); torch and optuna load only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unredact.errors import UnredactError


def _help(name: str) -> str:
    """Help text from the settings field's description (one source for CLI and settings)."""
    from unredact.whitebox.remove import RemoveSettings

    return RemoveSettings.model_fields[name].description or ""


def remove(
    model: Annotated[str, typer.Option("--model", "-m", help=_help("model"))] = "demo/qwen2.5-coder-0.5b",
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/remove"),
    trials: Annotated[int, typer.Option(help=_help("trials"))] = 24,
    budget_minutes: Annotated[float, typer.Option(help=_help("budget_minutes"))] = 30.0,
    probes: Annotated[str, typer.Option(help=_help("probes"))] = "default",
    dtype: Annotated[str, typer.Option(help=_help("dtype"))] = "auto",
    device: Annotated[str, typer.Option(help=_help("device"))] = "auto",
    seed: Annotated[int, typer.Option(help=_help("seed"))] = 0,
    eval_sensitive: Annotated[int, typer.Option("--eval-sensitive", "--eval-limit", help=_help("eval_sensitive"))] = 48,
    eval_harmful: Annotated[int, typer.Option(help=_help("eval_harmful"))] = 12,
    eval_other: Annotated[int, typer.Option(help=_help("eval_other"))] = 8,
    max_new_tokens: Annotated[int, typer.Option(help=_help("max_new_tokens"))] = 128,
    confirm_max_new_tokens: Annotated[int, typer.Option(help=_help("confirm_max_new_tokens"))] = 64,
    search_sensitive: Annotated[int, typer.Option(help=_help("search_sensitive"))] = 32,
    search_harmful: Annotated[int, typer.Option(help=_help("search_harmful"))] = 24,
    kl_prompts: Annotated[int, typer.Option(help=_help("kl_prompts"))] = 12,
    kl_tokens: Annotated[int, typer.Option(help=_help("kl_tokens"))] = 4,
    kl_langs: Annotated[str, typer.Option(help=_help("kl_langs") + " (comma-separated)")] = "en,zh-Hans,fr",
    proxy_depth: Annotated[int, typer.Option(help=_help("proxy_depth"))] = 3,
    candidates: Annotated[int, typer.Option(help=_help("candidates"))] = 3,
    kl_max: Annotated[float, typer.Option(help=_help("kl_max"))] = 0.1,
    harmful_keep: Annotated[float, typer.Option(help=_help("harmful_keep"))] = 0.9,
    batch_size: Annotated[int, typer.Option(help=_help("batch_size"))] = 8,
    forward_batch_size: Annotated[int, typer.Option(help=_help("forward_batch_size"))] = 16,
    system_prompt: Annotated[str | None, typer.Option(help=_help("system_prompt"))] = None,
    judge: Annotated[str, typer.Option(help=_help("judge"))] = "auto",
    audit_run: Annotated[Path | None, typer.Option(help=_help("audit_run"))] = None,
    verify: Annotated[str, typer.Option(help=_help("verify"))] = "quick",
    response_tokens: Annotated[int, typer.Option(help=_help("response_tokens"))] = 0,
    direction_prompts: Annotated[int, typer.Option(help=_help("direction_prompts"))] = 0,
    adapter: Annotated[bool, typer.Option(help=_help("adapter"))] = False,
    arch: Annotated[str | None, typer.Option(help=_help("arch"))] = None,
) -> None:
    """Remove political censorship from a local model (directional ablation), keeping safety refusals.

    Baseline audit -> directions -> search -> confirm on dev -> audit on test -> export to OUT/model
    -> verify against the original in OUT/verify.
    Re-run the same command to resume.
    """
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise UnredactError("remove needs optuna: pip install 'unredact[hf,remove]'") from exc
    from unredact.whitebox.remove import run_remove

    run_remove(
        model,
        out,
        trials=trials,
        budget_minutes=budget_minutes,
        probes=probes,
        dtype=dtype,
        device=device,
        seed=seed,
        eval_sensitive=eval_sensitive,
        eval_harmful=eval_harmful,
        eval_other=eval_other,
        max_new_tokens=max_new_tokens,
        confirm_max_new_tokens=confirm_max_new_tokens,
        search_sensitive=search_sensitive,
        search_harmful=search_harmful,
        kl_prompts=kl_prompts,
        kl_tokens=kl_tokens,
        kl_langs=[x.strip() for x in kl_langs.split(",") if x.strip()],
        proxy_depth=proxy_depth,
        candidates=candidates,
        kl_max=kl_max,
        harmful_keep=harmful_keep,
        batch_size=batch_size,
        forward_batch_size=forward_batch_size,
        system_prompt=system_prompt,
        judge=judge,
        audit_run=str(audit_run) if audit_run else None,
        verify=verify,
        response_tokens=response_tokens,
        direction_prompts=direction_prompts,
        adapter=adapter,
        arch=arch,
    )
