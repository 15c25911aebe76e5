"""``unredact verify``: the command, its options and the terminal table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def verify(
    original: Annotated[str | None, typer.Option("--original", help="model spec of the original model")] = None,
    modified: Annotated[str | None, typer.Option("--modified", help="model spec of the modified model")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/verify"),
    config: Annotated[Path | None, typer.Option(help="TOML file: [verify] settings, [verify.thresholds]")] = None,
    profile: Annotated[str | None, typer.Option(help="smoke, quick (default) or full")] = None,
    probes: Annotated[str | None, typer.Option(help="probe JSONL file or 'default'")] = None,
    knowledge: Annotated[str | None, typer.Option(help="multiple-choice JSONL file or 'default'")] = None,
    langs: Annotated[str | None, typer.Option(help="comma-separated languages (default: all)")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="system prompt (default: the model's own)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="answer length cap")] = None,
    kl_tokens: Annotated[int | None, typer.Option(help="drift: answer tokens compared per prompt")] = None,
    batch_size: Annotated[int | None, typer.Option(help="local models: prompts per batch")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto (bf16), float32, bfloat16, float16")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda ...")] = None,
    judge: Annotated[str | None, typer.Option(help="auto, lexical, or llm:SPEC")] = None,
    lmeval_tasks: Annotated[str | None, typer.Option(help="comma-separated lm-eval tasks (local data)")] = None,
    lmeval_include: Annotated[str | None, typer.Option(help="folder of lm-eval task YAML files")] = None,
    lmeval_limit: Annotated[int | None, typer.Option(help="lm-eval: items per task, at most")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="allow repository code to run")] = False,
    allow_pickle: Annotated[bool, typer.Option(help="allow pickle checkpoints")] = False,
) -> None:
    """Check that a modified model kept drift low, knowledge, cultural integrity, safety and fluency.

    Exit status: 0 all checks pass, 1 a check failed, 2 an error. Resumable: re-run the same command.
    """
    from unredact.verify.run import run_verify
    from unredact.verify.settings import load_verify_settings

    overrides: dict[str, Any] = {
        "original": original,
        "modified": modified,
        "profile": profile,
        "probes": probes,
        "knowledge": knowledge,
        "langs": _csv(langs),
        "system_prompt": system_prompt,
        "max_new_tokens": max_new_tokens,
        "kl_tokens": kl_tokens,
        "batch_size": batch_size,
        "dtype": dtype,
        "device": device,
        "judge": judge,
        "lmeval_tasks": _csv(lmeval_tasks),
        "lmeval_include": lmeval_include,
        "lmeval_limit": lmeval_limit,
        "trust_remote_code": trust_remote_code or None,
        "allow_pickle": allow_pickle or None,
    }
    settings = load_verify_settings(config, overrides)
    outcome = run_verify(settings, out)
    print_outcome(outcome.checks, outcome.passed, out)
    if not outcome.passed:
        raise typer.Exit(1)


def print_outcome(checks: Any, passed: bool, out: Path) -> None:
    """The terminal table: one row per check."""
    from rich.table import Table

    from unredact.ui import console

    table = Table(title="unredact verify", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("numbers (original -> modified)")
    style = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]"}
    for c in checks:
        detail = c.summary + "".join(f"\n[red]- {f}[/]" for f in c.failures)
        table.add_row(c.title, style.get(c.status, c.status), detail)
    console.print(table)
    verdict = "[bold green]PASSED[/]" if passed else "[bold red]FAILED[/]"
    console.print(f"{verdict}  {out / 'verify.json'}  {out / 'report.html'}")
