"""Before/after comparison of two runs: a terminal table and a side-by-side HTML page."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from rich.table import Table

from unredact.report.build import rows_from_artifacts
from unredact.report.html import COLOURS, CSS
from unredact.report.metrics import build_metrics
from unredact.rundir import RunDir, atomic_write_text
from unredact.ui import console

HEADLINES = (
    ("censorship index", "censorship_index"),
    ("candid", "candid_rate"),
    ("fabrication", "fabrication_rate"),
    ("controls censored", "control_censorship_index"),
    ("harmful refused", "harmful_refusal_rate"),
    ("harmless refused", "harmless_refusal_rate"),
)


def _fmt(stat: Any) -> str:
    if isinstance(stat, dict):
        return f"{100 * stat['rate']:.0f}% (n={stat['n']})" if stat.get("n") else "n/a"
    return "n/a" if stat is None else f"{stat:.2f}"


def compare_runs(a: Path, b: Path, out: Path | None = None) -> Path:
    rows_a, rows_b = rows_from_artifacts(RunDir(a)), rows_from_artifacts(RunDir(b))
    ma, mb = build_metrics(rows_a), build_metrics(rows_b)
    table = Table(title=f"{a.name} -> {b.name}")
    for col in ("measure", a.name, b.name):
        table.add_column(col)
    for label, key in HEADLINES:
        table.add_row(label, _fmt(ma["summary"][key]), _fmt(mb["summary"][key]))
    table.add_row("fact coverage", _fmt(ma["summary"]["mean_fact_coverage"]), _fmt(mb["summary"]["mean_fact_coverage"]))
    langs_b = {g["lang"]: g for g in mb["by_lang"]}
    for g in ma["by_lang"]:
        other = langs_b.get(g["lang"])
        table.add_row(
            f"censorship index · {g['lang']}",
            _fmt(g["censorship_index"]),
            _fmt(other["censorship_index"]) if other else "n/a",
        )
    console.print(table)
    out = out or (b / f"compare_{a.name}.html")
    atomic_write_text(out, _html(a.name, b.name, rows_a, rows_b, ma, mb))
    return out


def _pill(label: str) -> str:
    return f"<span class='pill' style='background:{COLOURS.get(label, '#999')}'>{escape(label)}</span>"


def _html(
    na: str, nb: str, rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], ma: dict[str, Any], mb: dict[str, Any]
) -> str:
    by_b = {r["key"]: r for r in rows_b}
    head = "".join(
        f"<tr><td>{lab}</td><td>{_fmt(ma['summary'][k])}</td><td>{_fmt(mb['summary'][k])}</td></tr>"
        for lab, k in HEADLINES
    )
    trs = []
    for r in rows_a:
        o = by_b.get(r["key"])
        if not o:
            continue
        changed = " style='background:#fffbe6'" if o["label"] != r["label"] else ""
        trs.append(
            f"<tr{changed}><td>{escape(r['id'])}</td><td>{escape(r['prompt'])}</td>"
            f"<td>{_pill(r['label'])}<div class='ans'>{escape(r.get('response') or '')}</div></td>"
            f"<td>{_pill(o['label'])}<div class='ans'>{escape(o.get('response') or '')}</div></td></tr>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(na)} vs {escape(nb)}</title>"
        f"<style>{CSS}</style></head><body><header><h1>{escape(na)} → {escape(nb)}</h1></header><main>"
        f"<section><h2>Headline</h2><table><tr><th>measure</th><th>{escape(na)}</th><th>{escape(nb)}</th></tr>"
        f"{head}</table></section><section><h2>Per probe (changed verdicts highlighted)</h2><table>"
        f"<tr><th>probe</th><th>prompt</th><th>{escape(na)}</th><th>{escape(nb)}</th></tr>{''.join(trs)}"
        "</table></section></main></body></html>"
    )
