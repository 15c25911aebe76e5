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
