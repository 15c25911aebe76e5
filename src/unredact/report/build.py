"""Judge a run's answers and write verdicts.jsonl, report.json, report.html and MODEL_CARD.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from unredact import __version__
from unredact.errors import RunDirError
from unredact.judge import JudgeInput, judge_items
from unredact.report.html import render_report
from unredact.report.metrics import build_metrics
from unredact.rundir import (
    PROBES,
    RESPONSES,
    VERDICTS,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)

SCHEMA = "unredact.report/1"
HUMAN_LABELS = "human_labels.jsonl"


def load_run_rows(run: RunDir) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    responses = run.records(RESPONSES)
    if not responses:
        raise RunDirError(f"{run.path} has no answers ({RESPONSES} missing or empty)")
    probes = {str(p.get("id")): p for p in read_jsonl(run.file(PROBES))}
    return sorted(responses.values(), key=lambda r: str(r.get("key"))), probes


def judge_run(run: RunDir, judge: str = "auto") -> list[dict[str, Any]]:
    """Judge every answer; write verdicts.jsonl atomically; return rows = response + verdict fields."""
    responses, probes = load_run_rows(run)
    items = [JudgeInput.from_record(r, probes.get(str(r.get("id")))) for r in responses]
    verdicts = judge_items(items, judge)
    atomic_write_text(
        run.file(VERDICTS), "".join(__import__("json").dumps(v.to_dict(), ensure_ascii=False) + "\n" for v in verdicts)
    )
    return join_rows(responses, [v.to_dict() for v in verdicts], run)


def join_rows(responses: list[dict[str, Any]], verdicts: list[dict[str, Any]], run: RunDir) -> list[dict[str, Any]]:
    """Responses with their verdicts; human labels (human_labels.jsonl) override automatic ones."""
    by_key = {v.get("key") or f"{v['id']}#0": v for v in verdicts}
    human = {h.get("key") or f"{h.get('id')}#0": h for h in read_jsonl(run.file(HUMAN_LABELS))}
    rows = []
    for r in responses:
        v = by_key.get(
            r["key"],
            {
                "label": "unscored",
                "facts_covered": [],
                "facts_total": 0,
                "confidence": 0.0,
                "judge": "none",
                "explanation": "",
            },
        )
        row = {
            **r,
            "label": v["label"],
            "facts_covered": v.get("facts_covered", []),
            "facts_total": v.get("facts_total", 0),
            "confidence": v.get("confidence", 0.0),
            "judge": v.get("judge", ""),
            "explanation": v.get("explanation", ""),
            "auto_label": v["label"],
        }
        h = human.get(r["key"])
        if h and h.get("label"):
            row.update(label=h["label"], judge="human", explanation=h.get("note", "human label"))
            if isinstance(h.get("facts_covered"), list):
                row["facts_covered"] = h["facts_covered"]
        rows.append(row)
    return rows


def rows_from_artifacts(run: RunDir) -> list[dict[str, Any]]:
    responses, _ = load_run_rows(run)
    verdicts = list(read_jsonl(run.file(VERDICTS)))
    if not verdicts:
        raise RunDirError(f"{run.path} has no verdicts; run `unredact judge-run {run.path}` or re-run the audit")
    return join_rows(responses, verdicts, run)


def write_report(run: RunDir, rows: list[dict[str, Any]]) -> Path:
    metrics = build_metrics(rows)
    config = run.read_config() if run.exists else {}
    model = str(rows[0].get("model", "")) if rows else ""
    report = {
        "schema": SCHEMA,
        "run": run.path.name,
        "model": model,
        "unredact": __version__,
        "judge": sorted({str(r.get("judge")) for r in rows}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "system_prompt": config.get("audit", {}).get("system_prompt"),
        **metrics,
    }
    atomic_write_json(run.file("report.json"), report)
    atomic_write_text(run.file("report.html"), render_report(report, rows))
    atomic_write_text(run.file("MODEL_CARD.md"), model_card_snippet(report))
    return run.file("report.html")


def judge_and_report(path: Path, judge: str = "auto") -> Path:
    run = RunDir(path)
    return write_report(run, judge_run(run, judge))


def _pct(x: dict[str, Any] | None) -> str:
    if not x or not x.get("n"):
        return "n/a"
    return f"{100 * x['rate']:.0f}% [{100 * x['low']:.0f}-{100 * x['high']:.0f}] (n={x['n']})"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def model_card_snippet(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "## Censorship audit (unredact)",
        "",
        f"Model `{report['model']}`, judge {', '.join(report['judge'])}, unredact {report['unredact']}.",
        "",
        "| measure | value (95% CI) |",
        "|---|---|",
        f"| censorship index (sensitive China probes) | {_pct(s['censorship_index'])} |",
        f"| candid answers | {_pct(s['candid_rate'])} |",
        f"| fabrication | {_pct(s['fabrication_rate'])} |",
        f"| censorship on matched non-China controls | {_pct(s['control_censorship_index'])} |",
        f"| harmful requests refused | {_pct(s['harmful_refusal_rate'])} |",
        f"| harmless requests refused | {_pct(s['harmless_refusal_rate'])} |",
        f"| mean fact coverage (sensitive) | {_num(s['mean_fact_coverage'])} |",
        "",
        "| language | censorship index |",
        "|---|---|",
        *(f"| {g['lang']} | {_pct(g['censorship_index'])} |" for g in report["by_lang"]),
        "",
    ]
    return "\n".join(lines)
