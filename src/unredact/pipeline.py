"""End-to-end flows that chain stages: audit -> judge -> report."""

from __future__ import annotations

from pathlib import Path

from unredact.audit import run_generation
from unredact.settings import AuditSettings
from unredact.ui import console


def audit_and_report(settings: AuditSettings, out: Path) -> Path | None:
    """Generate (resumably), judge every answer, write report.json/report.html; return the report path."""
    outcome = run_generation(settings, out)
    console.print(
        f"answers: {outcome.generated} new, {outcome.skipped} already present, {outcome.errors} errors "
        f"({outcome.seconds:.1f} s) -> {out / 'responses.jsonl'}"
    )
    if settings.judge == "none":
        return None
    from unredact.report.build import judge_and_report

    report = judge_and_report(out, judge=settings.judge)
    console.print(f"[bold green]report:[/] {report}")
    return report


def run_demo(
    model: str,
    out: Path,
    *,
    audit_only: bool = False,
    trials: int = 8,
    budget_minutes: float = 8.0,
    verify_profile: str = "smoke",
) -> None:
    """What `make demo` runs: audit -> remove -> verify -> before/after report, sized for a laptop CPU.

    Every stage resumes: re-running the command after a kill continues where it stopped.
    """
    settings = AuditSettings(model=model, profile="quick", max_new_tokens=128, batch_size=8)
    console.rule("[bold]1/4 audit[/] (quick profile)")
    report = audit_and_report(settings, out / "audit")
    if audit_only:
        console.print(f"open {report} in a browser; `unredact serve {out}` to review answers")
        return
    from unredact.report.compare import compare_runs
    from unredact.whitebox.remove import run_remove

    console.rule("[bold]2/4 remove[/] (directions, search, confirm, export) and [bold]3/4 verify[/]")
    result = run_remove(
        model,
        out / "remove",
        trials=trials,
        budget_minutes=budget_minutes,
        audit_run=str(out / "audit"),
        eval_sensitive=24,
        eval_harmful=12,
        eval_other=4,
        max_new_tokens=96,
        confirm_max_new_tokens=48,
        candidates=2,
        direction_prompts=64,  # directions keep a cosine of 0.96-0.99 with all 432 prompts, 2.7x faster
        verify=verify_profile,
    )
    console.rule("[bold]4/4 before/after report[/]")
    after = out / "remove" / f"edited-test-trial-{result.chosen_trial}"
    page = compare_runs(out / "remove" / "baseline-test", after, out / "before_after.html")
    verdict = {True: "passed", False: "FAILED", None: "not run"}[result.verify_passed]
    console.print(
        f"[bold green]demo done[/]: audit {report}\n  model {result.model_dir} (card {result.model_card})\n"
        f"  verify {verdict}: {out / 'remove' / 'verify' / 'report.html'}\n  before/after {page}\n"
        f"  `unredact serve {out}` to review answers side by side"
    )
