"""The `unredact` command line (typer). Heavy modules are imported inside commands only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from unredact.errors import UnredactError

app = typer.Typer(
    help="Audit, remove and verify Chinese-state political censorship in LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
models_app = typer.Typer(help="List, fetch and inspect models.", no_args_is_help=True)
probes_app = typer.Typer(help="Inspect and validate probe sets.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(probes_app, name="probes")


def _mount_web() -> None:
    """The review app's commands (its dependencies load only when a command runs)."""
    from unredact.web.cli import serve, users_app

    app.command("serve", help="Serve the expert review web app over a runs directory.")(serve)
    app.add_typer(users_app, name="users")


_mount_web()


def _mount_remove() -> None:
    """`unredact remove` (torch and optuna load only when it runs)."""
    from unredact.whitebox.cli import remove

    app.command("remove", help="Remove censorship from a local model: directions, search, confirm, export.")(remove)


_mount_remove()


def _mount_finetune() -> None:
    """`unredact finetune` (torch and peft load only when it runs)."""
    from unredact.finetune.cli import finetune

    app.command("finetune", help="Fine-tune censorship away: LoRA SFT on candid gold answers, export, verify.")(
        finetune
    )


_mount_finetune()


def _mount_verify() -> None:
    """`unredact verify` (torch loads only when it runs)."""
    from unredact.verify.cli import verify

    app.command("verify", help="Compare a modified model with its original: drift, knowledge, culture, safety.")(verify)


_mount_verify()

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="demo/NAME, hf/DIR-OR-ID, gguf/FILE, openai/MODEL@URL or mock/SCRIPT"),
]
CsvOpt = Annotated[str | None, typer.Option(help="comma-separated list")]


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _echo(message: str) -> None:
    from unredact.ui import console

    console.print(message)


@app.command()
def audit(
    model: ModelOpt = None,
    probes: Annotated[str | None, typer.Option(help="probe JSONL file or 'default'")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/audit"),
    config: Annotated[Path | None, typer.Option(help="TOML settings file ([audit] table)")] = None,
    profile: Annotated[str | None, typer.Option(help="quick (balanced subset) or full")] = None,
    langs: CsvOpt = None,
    topics: CsvOpt = None,
    kinds: CsvOpt = None,
    splits: CsvOpt = None,
    limit: Annotated[int | None, typer.Option(help="at most N probes")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="system prompt (default: the model's own)")] = None,
    samples: Annotated[int | None, typer.Option(help="answers per probe")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus sampling mass")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for sampled runs")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="answer length cap")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="local models: prompts per batch")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto (bf16), float32, bfloat16, float16")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda ...")] = None,
    concurrency: Annotated[int | None, typer.Option(help="remote: requests in flight")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="remote: seconds per request")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="allow repository code to run")] = False,
    allow_pickle: Annotated[bool, typer.Option(help="allow pickle checkpoints")] = False,
    judge: Annotated[str | None, typer.Option(help="auto, lexical, or llm:SPEC")] = None,
) -> None:
    """Ask a model the probes and measure its censorship (resumable: re-run the same command)."""
    from unredact.settings import load_settings

    overrides: dict[str, Any] = {
        "model": model,
        "probes": probes,
        "profile": profile,
        "langs": _csv(langs),
        "topics": _csv(topics),
        "kinds": _csv(kinds),
        "splits": _csv(splits),
        "limit": limit,
        "system_prompt": system_prompt,
        "samples": samples,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "stop": stop,
        "batch_size": batch_size,
        "dtype": dtype,
        "device": device,
        "concurrency": concurrency,
        "timeout_s": timeout_s,
        "judge": judge,
        "trust_remote_code": trust_remote_code or None,
        "allow_pickle": allow_pickle or None,
    }
    settings = load_settings(config, overrides)
    from unredact.pipeline import audit_and_report

    audit_and_report(settings, out)


@models_app.command("list")
def models_list() -> None:
    """List the bundled demo models and whether they are cached."""
    from unredact.models.demo import DEMO_MODELS, unredact_home

    home = unredact_home()
    for name, demo in DEMO_MODELS.items():
        cached = (home / "models" / name / "unredact_cache.json").is_file()
        mark = "[green]cached[/]" if cached else "[dim]not fetched[/]"
        typer.echo(f"demo/{name}\t{demo.size / 1e6:.0f} MB GGUF\t{demo.description}", nl=False)
        _echo(f"  {mark}")


@models_app.command("fetch")
def models_fetch(spec: Annotated[str, typer.Argument(help="model spec, e.g. demo/qwen2.5-coder-0.5b")]) -> None:
    """Download/assemble/convert a model into the cache (UNREDACT_HOME)."""
    from unredact.backends.registry import LOCAL_KINDS, parse_spec
    from unredact.models.loader import resolve_model

    kind, rest = parse_spec(spec)
    if kind not in LOCAL_KINDS:
        raise UnredactError(f"{spec} is not a local model; nothing to fetch")
    resolved = resolve_model(kind, rest, log=_echo)
    typer.echo(resolved.path)


@models_app.command("info")
def models_info(
    spec: Annotated[str, typer.Argument(help="model spec")],
    dtype: Annotated[str, typer.Option(help="dtype to load in")] = "auto",
) -> None:
    """Load a model and print what unredact knows about it."""
    import json

    from unredact.backends.registry import BackendOptions, load_backend

    backend = load_backend(spec, BackendOptions(dtype=dtype))
    typer.echo(json.dumps(backend.describe(), indent=2, ensure_ascii=False))


@probes_app.command("validate")
def probes_validate(file: Annotated[Path, typer.Argument(help="probe JSONL file")]) -> None:
    """Check a probe file; print every problem as file:line."""
    from unredact.probes.loader import validate_file

    probes, problems = validate_file(file)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{file}: {len(probes)} probes, valid")


@probes_app.command("stats")
def probes_stats(file: Annotated[str, typer.Argument(help="probe file or 'default'")] = "default") -> None:
    """Counts by kind, topic, language and split."""
    from unredact.probes.stats import print_stats

    print_stats(file)


@probes_app.command("list")
def probes_list(
    file: Annotated[str, typer.Argument(help="probe file or 'default'")] = "default",
    profile: Annotated[str, typer.Option(help="quick or full")] = "full",
    langs: CsvOpt = None,
    topics: CsvOpt = None,
    kinds: CsvOpt = None,
    splits: CsvOpt = None,
) -> None:
    """Print the selected probes (id, language, prompt)."""
    from unredact.probes.loader import load_probes, select_probes

    for p in select_probes(
        load_probes(file),
        langs=_csv(langs),
        topics=_csv(topics),
        kinds=_csv(kinds),
        splits=_csv(splits),
        profile=profile,
    ):
        typer.echo(f"{p.id}\t{p.kind}\t{p.split}\t{p.prompt}")


@app.command()
def judge(
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL: id, prompt, response, lang [, facts, kind]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="verdicts JSONL")],
    judge: Annotated[str, typer.Option(help="auto, lexical, or llm:SPEC")] = "auto",
) -> None:
    """Judge any file of answers: one verdict (id, label, facts_covered, confidence, judge) per line."""
    import json

    from unredact.judge import JudgeInput, judge_items
    from unredact.rundir import atomic_write_text

    items = [JudgeInput.from_record(r) for r in _read_answers(input)]
    verdicts = judge_items(items, judge)
    atomic_write_text(out, "".join(json.dumps(v.to_dict(), ensure_ascii=False) + "\n" for v in verdicts))
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.label] = counts.get(v.label, 0) + 1
    _echo(f"{len(verdicts)} verdicts -> {out}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))


def _read_answers(path: Path) -> list[dict[str, Any]]:
    from unredact.rundir import read_jsonl_strict

    def check(row: dict[str, Any]) -> str | None:
        ok = "id" in row and isinstance(row.get("response", ""), str)
        return None if ok else "each line needs 'id' and a string 'response'"

    rows = read_jsonl_strict(path, check)
    if not rows:
        raise UnredactError(f"{path}: no answers to judge")
    return rows


@app.command("judge-eval")
def judge_eval(
    labelled: Annotated[Path | None, typer.Argument(help="labelled JSONL (default: the bundled set)")] = None,
    split: Annotated[str | None, typer.Option(help="only rows of this split (bundled set: heldout)")] = None,
    judge: Annotated[str, typer.Option(help="auto, lexical, or llm:SPEC")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the numbers as JSON")] = None,
) -> None:
    """Per-class precision/recall/F1, macro-F1, kappa and confusion matrix, per language."""
    import json

    from unredact.judge.evaluate import evaluate, format_report, load_labelled_file
    from unredact.judge.learned import labelled_path

    path = labelled or labelled_path()
    rows = load_labelled_file(path, split if split or labelled else "heldout")
    result = evaluate(rows, judge)
    typer.echo(format_report(result))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="run directory")],
    rejudge: Annotated[bool, typer.Option(help="judge the answers again first")] = False,
    judge: Annotated[str, typer.Option(help="judge for --rejudge")] = "auto",
) -> None:
    """Regenerate report.json, report.html and MODEL_CARD.md from a run's artifacts."""
    from unredact.report.build import judge_and_report, rows_from_artifacts, write_report
    from unredact.rundir import RunDir

    path = judge_and_report(run, judge) if rejudge else write_report(RunDir(run), rows_from_artifacts(RunDir(run)))
    _echo(f"[bold green]report:[/] {path}")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="run before")],
    b: Annotated[Path, typer.Argument(help="run after")],
    out: Annotated[Path | None, typer.Option(help="HTML output (default: B/compare_A.html)")] = None,
) -> None:
    """Before/after: a terminal table and a side-by-side HTML page."""
    from unredact.report.compare import compare_runs

    _echo(f"[bold green]comparison:[/] {compare_runs(a, b, out)}")


@app.command()
def directions(
    model: Annotated[str, typer.Option("--model", "-m", help="local model spec")] = "demo/qwen2.5-coder-0.5b",
    out: Annotated[Path, typer.Option("--out", "-o", help="directions file (.safetensors)")] = Path(
        "runs/directions.safetensors"
    ),
    probes: Annotated[str, typer.Option(help="probe file or 'default' (train split is used)")] = "default",
    audit_run: Annotated[
        Path | None, typer.Option(help="audit run: keep only the sensitive probes the model censored")
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto (bf16), float32 ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="prompts per forward pass")] = 16,
    response_tokens: Annotated[
        int, typer.Option(min=0, max=16, help="also average the first N greedy answer tokens (0: last prompt token)")
    ] = 0,
    max_prompts: Annotated[
        int, typer.Option(min=0, help="at most N train prompts per group, balanced over topics (0: all)")
    ] = 0,
) -> None:
    """Censorship and harmful-refusal directions per layer (the censorship one orthogonal to refusal)."""
    from unredact.backends.registry import LOCAL_KINDS, BackendOptions, load_backend, parse_spec

    if parse_spec(model)[0] not in LOCAL_KINDS:
        raise UnredactError(f"{model}: directions need local weights (demo/, hf/, gguf/)")
    from unredact.whitebox.extract import extract_directions

    backend = load_backend(model, BackendOptions(dtype=dtype))
    result = extract_directions(
        backend,
        probes,
        out,
        audit_run,  # type: ignore[arg-type]
        batch_size,
        response_tokens,
        max_prompts,
    )
    _echo(f"[bold green]directions:[/] {out} ({result.n_layers} layers, hidden {result.hidden_size})")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory")] = Path("runs/demo"),
    model: Annotated[str, typer.Option(help="demo model")] = "demo/qwen2.5-coder-0.5b",
    audit_only: Annotated[bool, typer.Option(help="stop after the audit")] = False,
    trials: Annotated[int, typer.Option(help="removal search trials")] = 8,
    budget_minutes: Annotated[float, typer.Option(help="removal search budget")] = 8.0,
    verify: Annotated[str, typer.Option(help="verify profile: smoke, quick, full or none")] = "smoke",
) -> None:
    """The whole pipeline on the demo model (what `make demo` runs): audit -> remove -> verify -> report."""
    from unredact.pipeline import run_demo

    run_demo(model, out, audit_only=audit_only, trials=trials, budget_minutes=budget_minutes, verify_profile=verify)


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    try:
        app()
    except UnredactError as exc:
        print(f"unredact: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("unredact: interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
