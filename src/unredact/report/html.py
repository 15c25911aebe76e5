"""A standalone HTML report (inline CSS, SVG-free bar charts and a heatmap, a filterable example list)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from unredact.judge.core import LABELS

COLOURS = {
    "refusal": "#d62728",
    "deflection": "#ff7f0e",
    "state_narrative": "#9467bd",
    "candid": "#2ca02c",
    "fabrication": "#8c564b",
    "error": "#7f7f7f",
    "unscored": "#bbbbbb",
}
LANG_ORDER = ("en", "zh-Hans", "zh-Hant", "fr")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans CJK SC',sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header .meta{opacity:.8;font-size:13px}main{padding:18px 28px;max-width:1280px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:14px 18px;margin:0 0 16px}
h2{font-size:16px;margin:0 0 10px}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{flex:1 1 150px;border:1px solid #e3e6ea;border-radius:8px;padding:10px 12px;background:#fbfcfd}
.card .v{font-size:24px;font-weight:650}.card .l{font-size:12px;color:#5b6474}.card .ci{font-size:11px;color:#7b8494}
table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #eef0f3;text-align:left;vertical-align:top}
th{font-size:12px;color:#5b6474;font-weight:600}.heat td.c{text-align:center;font-weight:600;color:#111;min-width:70px}.heat .sub{font-size:10px;font-weight:400;opacity:.8}
.bar{display:flex;height:18px;border-radius:4px;overflow:hidden;background:#eee;min-width:260px}.bar span{display:block;height:100%}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;white-space:nowrap}
.ans{white-space:pre-wrap;max-height:9em;overflow:auto;font-size:13px;background:#fafbfc;padding:4px 6px;border-radius:4px}
.filters select,.filters input{margin-right:8px;padding:3px}.muted{color:#7b8494;font-size:12px}
"""

JS = """
function f(){const g=id=>document.getElementById(id).value;const q=g('q').toLowerCase();
document.querySelectorAll('#ex tbody tr').forEach(r=>{const d=r.dataset;
const ok=(!g('ft')||d.topic==g('ft'))&&(!g('fl')||d.lang==g('fl'))&&(!g('fk')||d.kind==g('fk'))&&(!g('fv')||d.label==g('fv'))&&(!q||r.textContent.toLowerCase().includes(q));
r.style.display=ok?'':'none';});}
"""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _card(label: str, stat: dict[str, Any] | float | None, hint: str = "") -> str:
    if isinstance(stat, dict):
        value = _pct(stat["rate"]) if stat.get("n") else "n/a"
        ci = f"95% CI {_pct(stat['low'])}–{_pct(stat['high'])}, n={stat['n']}" if stat.get("n") else ""
    else:
        value, ci = (_pct(stat) if isinstance(stat, float) else "n/a"), ""
    return (
        f'<div class="card"><div class="v">{value}</div><div class="l">{escape(label)}</div>'
        f'<div class="ci">{escape(ci or hint)}</div></div>'
    )


def _heat_colour(rate: float) -> str:
    # green (0) -> yellow -> red (1)
    r = int(60 + 195 * min(1.0, rate * 2))
    g = int(190 - 150 * max(0.0, rate * 2 - 1))
    return f"rgb({r},{g},90)"


def _heatmap(report: dict[str, Any]) -> str:
    cells = {(g["topic"], g["lang"]): g for g in report["by_topic_lang"]}
    topics = sorted({t for t, _ in cells})
    langs = [lang for lang in LANG_ORDER if any(lg == lang for _, lg in cells)]
    if not topics:
        return "<p class='muted'>No sensitive probes in this run.</p>"
    head = "".join(f"<th>{escape(lang)}</th>" for lang in langs)
    rows = []
    for t in topics:
        tds = []
        for lang in langs:
            g = cells.get((t, lang))
            if not g or not g["censorship_index"]["n"]:
                tds.append("<td class='c muted'>–</td>")
                continue
            ci = g["censorship_index"]
            tds.append(
                f"<td class='c' style='background:{_heat_colour(ci['rate'])}' title='n={ci['n']}, "
                f"95% CI {_pct(ci['low'])}–{_pct(ci['high'])}'>{_pct(ci['rate'])}"
                f"<div class='sub'>candid {_pct(g['classes']['candid']['rate'])} · "
                f"fabr. {_pct(g['classes']['fabrication']['rate'])}</div></td>"
            )
        rows.append(f"<tr><td>{escape(t)}</td>{''.join(tds)}</tr>")
    return f"<table class='heat'><tr><th>topic</th>{head}</tr>{''.join(rows)}</table>"


def _stacked(classes: dict[str, dict[str, Any]]) -> str:
    spans = "".join(
        f"<span style='width:{100 * classes[lab]['rate']:.2f}%;background:{COLOURS[lab]}' "
        f"title='{lab}: {_pct(classes[lab]['rate'])}'></span>"
        for lab in LABELS
        if classes[lab]["rate"] > 0
    )
    return f"<div class='bar'>{spans}</div>"


def _bars(groups: Sequence[dict[str, Any]], key: str) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(g[key]))}</td><td>{g['n']}</td><td>{_stacked(g['classes'])}</td>"
        f"<td>{_pct(g['censorship_index']['rate'])}</td><td>{_pct(g['fact_coverage'])}</td></tr>"
        for g in groups
    )
    return f"<table><tr><th>{key}</th><th>n</th><th>classes</th><th>censored</th><th>facts</th></tr>{rows}</table>"


def _legend() -> str:
    return (
        "<p class='legend'>"
        + "".join(f"<span><i style='background:{COLOURS[lab]}'></i>{lab}</span>" for lab in (*LABELS, "error"))
        + "</p>"
    )


def _options(values: Sequence[str]) -> str:
    return "<option value=''>all</option>" + "".join(f"<option>{escape(v)}</option>" for v in values)


def _examples(rows: Sequence[dict[str, Any]]) -> str:
    trs = []
    for r in rows:
        label = str(r.get("label"))
        facts = f"{len(r.get('facts_covered') or [])}/{r.get('facts_total', 0)}" if r.get("facts_total") else ""
        covered = ", ".join(map(str, r.get("facts_covered") or []))
        trs.append(
            f"<tr data-topic='{escape(str(r.get('topic')))}' data-lang='{escape(str(r.get('lang')))}' "
            f"data-kind='{escape(str(r.get('kind')))}' data-label='{escape(label)}'>"
            f"<td>{escape(str(r.get('id')))}<div class='muted'>{escape(str(r.get('kind')))}</div></td>"
            f"<td>{escape(str(r.get('prompt')))}</td><td><div class='ans'>{escape(str(r.get('response') or r.get('error') or ''))}</div></td>"
            f"<td><span class='pill' style='background:{COLOURS.get(label, '#999')}'>{escape(label)}</span>"
            f"<div class='muted'>{escape(str(r.get('explanation', '')))}</div></td>"
            f"<td>{facts}<div class='muted'>{escape(covered)}</div></td></tr>"
        )
    uniq = lambda k: sorted({str(r.get(k)) for r in rows})  # noqa: E731
    filters = (
        "<div class='filters'>topic <select id='ft' onchange='f()'>" + _options(uniq("topic")) + "</select>"
        "lang <select id='fl' onchange='f()'>" + _options(uniq("lang")) + "</select>"
        "kind <select id='fk' onchange='f()'>" + _options(uniq("kind")) + "</select>"
        "verdict <select id='fv' onchange='f()'>" + _options(uniq("label")) + "</select>"
        "<input id='q' placeholder='search text' oninput='f()'></div>"
    )
    return (
        filters + "<table id='ex'><thead><tr><th>probe</th><th>prompt</th><th>answer</th><th>verdict</th>"
        "<th>facts</th></tr></thead><tbody>" + "".join(trs) + "</tbody></table>"
    )


def render_report(report: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    s = report["summary"]
    spec = s.get("china_specificity")
    cards = "".join(
        [
            _card("censorship index (sensitive China probes)", s["censorship_index"]),
            _card("candid answers (sensitive)", s["candid_rate"]),
            _card("fabrication (sensitive)", s["fabrication_rate"]),
            _card("censored on non-China controls", s["control_censorship_index"]),
            _card("China-specificity (index minus controls)", spec, "high = censorship targets China topics"),
            _card("harmful requests refused", s["harmful_refusal_rate"]),
            _card("harmless requests refused", s["harmless_refusal_rate"]),
            _card("mean fact coverage (sensitive)", s["mean_fact_coverage"]),
        ]
    )
    sysp = report.get("system_prompt")
    meta = (
        f"model <b>{escape(report['model'])}</b> · run {escape(report['run'])} · judge "
        f"{escape(', '.join(report['judge']))} · {escape(report['created'])} · system prompt: "
        f"{escape(sysp) if sysp else 'model default'} · {s['answers']} answers, {s['errors']} errors"
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>unredact report: {escape(report["model"])}</title>
<style>{CSS}</style><script>{JS}</script></head><body>
<header><h1>Censorship audit: {escape(report["model"])}</h1><div class="meta">{meta}</div></header><main>
<section><h2>Headline</h2><div class="cards">{cards}</div>
<p class="muted">Censored = refusal + deflection + state narrative. Intervals are Wilson 95%. Errors are excluded from rates.</p></section>
<section><h2>Censorship index by topic and language (sensitive probes)</h2><p class='muted'>Cell: share of answers censored (refusal, deflection or state narrative); below it the candid and fabricated shares. A low censorship index with a high fabrication share means the model answers but invents.</p>{_heatmap(report)}</section>
<section><h2>Verdicts by probe kind</h2>{_legend()}{_bars(report["by_kind"], "kind")}</section>
<section><h2>Sensitive probes by language</h2>{_legend()}{_bars(report["by_lang"], "lang")}</section>
<section><h2>Answers</h2>{_examples(rows)}</section>
<script type="application/json" id="report-data">{escape(json.dumps(report["summary"]))}</script>
</main></body></html>"""
