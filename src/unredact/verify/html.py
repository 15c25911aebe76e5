"""The verification page: verdict, one row per check, and the distributions behind the numbers."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from unredact.report.html import CSS, LANG_ORDER
from unredact.verify.drift import BINS

STATUS_COLOURS = {"pass": "#2ca02c", "fail": "#d62728", "skip": "#7f7f7f"}
EXTRA_CSS = """
.verdict{font-size:20px;font-weight:700}.hist{display:flex;align-items:flex-end;gap:3px;height:70px}
.hist div{width:34px;background:#4c78a8;border-radius:2px 2px 0 0}.hist-l{display:flex;gap:3px}
.hist-l span{width:34px;font-size:9px;color:#5b6474;text-align:center}.pair{display:flex;gap:28px;flex-wrap:wrap}
.acc{position:relative;height:14px;background:#eef0f3;border-radius:3px;min-width:220px}
.acc span{position:absolute;top:0;height:100%;border-radius:3px;opacity:.85}
.acc i{position:absolute;top:-2px;height:18px;border-left:2px solid #1d2433}
"""


def _pill(status: str) -> str:
    return f'<span class="pill" style="background:{STATUS_COLOURS.get(status, "#999")}">{escape(status)}</span>'


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(w: Mapping[str, Any] | float | None) -> str:
    if isinstance(w, float):
        return _pct(w)
    if not w or not w.get("n"):
        return "n/a"
    return f"{_pct(w['rate'])} <span class='muted'>[{_pct(w['low'])}–{_pct(w['high'])}] n={w['n']}</span>"


def _langs(keys: Any) -> list[str]:
    keys = [k for k in keys if k != "all"]
    return sorted(keys, key=lambda k: (LANG_ORDER.index(k) if k in LANG_ORDER else 99, k))


def _checks_table(doc: Mapping[str, Any]) -> str:
    rows = []
    for c in doc["checks"]:
        why = "".join(f"<li>{escape(f)}</li>" for f in c["failures"])
        rows.append(
            f"<tr><td>{_pill(c['status'])}</td><td><b>{escape(c['title'])}</b><br>"
            f"<span class='muted'>{escape(c['summary'])}</span>{f'<ul>{why}</ul>' if why else ''}</td></tr>"
        )
    return "<table><tr><th>status</th><th>check</th></tr>" + "".join(rows) + "</table>"


def _drift(c: Mapping[str, Any]) -> str:
    if c["status"] == "skip":
        return ""
    dist = c["metrics"]["by_lang"]
    labels = [f"≥{b:g}" for b in BINS]
    blocks, table = [], []
    for lang in ["all", *_langs(dist)]:
        d = dist[lang]
        top = max(d["hist"]) or 1
        bars = "".join(f'<div style="height:{max(2, 70 * n / top):.0f}px" title="{n}"></div>' for n in d["hist"])
        names = "".join(f"<span>{escape(x)}</span>" for x in labels)
        blocks.append(
            f"<div><b>{escape(lang)}</b><div class='hist'>{bars}</div><div class='hist-l'>{names}</div></div>"
        )
        table.append(
            f"<tr><td>{escape(lang)}</td><td>{d['n']}</td><td>{d['mean']:.4f}</td><td>{d['median']:.4f}</td>"
            f"<td>{d['p90']:.4f}</td><td>{d['max']:.4f}</td></tr>"
        )
    head = "<tr><th>language</th><th>prompts</th><th>mean</th><th>median</th><th>p90</th><th>max</th></tr>"
    return (
        "<section><h2>Drift: KL(original ‖ modified) per harmless prompt, first answer tokens</h2>"
        f"<div class='pair'>{''.join(blocks)}</div><p class='muted'>Histogram bins in nats.</p>"
        f"<table>{head}{''.join(table)}</table></section>"
    )


def _acc_bar(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    def span(w: Mapping[str, Any], colour: str) -> str:
        lo, hi = 100 * w["low"], 100 * w["high"]
        return f'<span style="left:{lo:.1f}%;width:{max(0.5, hi - lo):.1f}%;background:{colour}"></span>'

    marks = f'<i style="left:{100 * before["rate"]:.1f}%"></i><i style="left:{100 * after["rate"]:.1f}%;border-color:#e45756"></i>'
    return f"<div class='acc'>{span(before, '#9ecae9')}{span(after, '#f4a582')}{marks}</div>"


def _knowledge(c: Mapping[str, Any]) -> str:
    if c["status"] == "skip":
        return ""
    acc = c["metrics"]["accuracy"]
    rows = []
    for key in ["all", *_langs(acc["original"])]:
        b, a = acc["original"].get(key), acc["modified"].get(key)
        if b and a:
            rows.append(f"<tr><td>{escape(key)}</td><td>{_ci(b)}</td><td>{_ci(a)}</td><td>{_acc_bar(b, a)}</td></tr>")
    dom = c["metrics"]["by_domain"]
    drows = "".join(
        f"<tr><td>{escape(k)}</td><td>{_ci(dom['original'][k])}</td><td>{_ci(dom['modified'].get(k))}</td></tr>"
        for k in _langs(dom["original"])
    )
    p = c["metrics"]["paired"]
    lm = c["metrics"].get("lmeval") or {}
    lm_rows = "".join(
        f"<tr><td>{escape(task)}</td><td>{escape(_fmt(m))}</td><td>{escape(_fmt(lm.get('modified', {}).get(task, {})))}"
        "</td></tr>"
        for task, m in lm.get("original", {}).items()
    )
    lm_table = f"<h2>lm-eval tasks</h2><table><tr><th>task</th><th>original</th><th>modified</th></tr>{lm_rows}</table>"
    return (
        "<section><h2>Knowledge: multiple-choice accuracy (acc_norm, 95% intervals)</h2>"
        "<table><tr><th></th><th>original</th><th>modified</th><th>intervals (blue: original, orange: modified)</th>"
        f"</tr>{''.join(rows)}</table><p class='muted'>Paired: {p['lost']} items right only before, "
        f"{p['gained']} right only after, of {p['items']}.</p>"
        f"<table><tr><th>domain</th><th>original</th><th>modified</th></tr>{drows}</table>"
        f"{lm_table if lm_rows else ''}</section>"
    )


def _fmt(m: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())


def _side_table(title: str, metrics: Mapping[str, Any], keys: Mapping[str, str]) -> str:
    rows = []
    for key, label in keys.items():
        m = metrics.get(key)
        if not isinstance(m, Mapping) or "original" not in m:
            continue
        b, a = m["original"], m["modified"]
        if isinstance(b, Mapping) and "rate" in b:
            rows.append(f"<tr><td>{escape(label)}</td><td>{_ci(b)}</td><td>{_ci(a)}</td></tr>")
        elif isinstance(b, Mapping):
            for lang in _langs(b):
                rows.append(
                    f"<tr><td>{escape(label)} · {escape(lang)}</td><td>{_ci(b[lang])}</td><td>{_ci(a.get(lang))}</td></tr>"
                )
        else:
            rows.append(f"<tr><td>{escape(label)}</td><td>{_num(b)}</td><td>{_num(a)}</td></tr>")
    head = "<tr><th></th><th>original</th><th>modified</th></tr>"
    return f"<section><h2>{escape(title)}</h2><table>{head}{''.join(rows)}</table>" if rows else ""


def _num(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, float) and 0 <= x <= 1 else escape(str(x))


def _examples(c: Mapping[str, Any]) -> str:
    ex = c["metrics"].get("political_examples") or []
    if not ex:
        return ""
    items = "".join(
        f"<li><b>{escape(e['id'])}</b> ({escape(', '.join(e['terms']))}): <span class='ans'>{escape(e['response'])}</span></li>"
        for e in ex
    )
    return f"<p>Neutral answers of the modified model with political terms:</p><ul>{items}</ul>"


def render_verify(doc: Mapping[str, Any]) -> str:
    """The standalone page for one verify.json."""
    by = {c["name"]: c for c in doc["checks"]}
    verdict = "PASSED" if doc["passed"] else "FAILED"
    colour = STATUS_COLOURS["pass" if doc["passed"] else "fail"]
    sections = [
        f"<section><div class='verdict' style='color:{colour}'>{verdict}</div>{_checks_table(doc)}"
        "<p class='muted'>Audit reports of each side: <a href='original/report.html'>original</a> · "
        "<a href='modified/report.html'>modified</a></p></section>",
        _drift(by["drift"]),
        _knowledge(by["knowledge"]),
    ]
    cultural = by["cultural"]
    if cultural["status"] != "skip":
        keys = {
            "neutral_fact_coverage": "neutral fact coverage",
            "coverage_by_lang": "coverage",
            "political_rate": "unprompted political content",
            "language_match": "answer in the question's language",
            "language_match_by_lang": "right language",
            "zh_hant_in_simplified": "zh-Hant answered in Simplified",
        }
        sections.append(_side_table(cultural["title"], cultural["metrics"], keys) + _examples(cultural) + "</section>")
    for name, keys in (
        ("safety", {"refusal_rate": "harmful requests declined", "by_lang": "declined"}),
        (
            "overcorrection",
            {
                "fabrication_rate": "fabrication (sensitive)",
                "unsupported_numbers_rate": "numbers absent from the facts (sensitive)",
                "sensitive_candid_rate": "candid (sensitive)",
                "control_candid_rate": "candid (control-sensitive)",
            },
        ),
        (
            "fluency",
            {
                "degenerate_rate": "degenerate answers",
                "mean_repetition": "mean 4-gram repetition",
                "unfinished_rate": "cut at the length cap (neutral, harmless)",
                "degenerate_by_lang": "degenerate",
            },
        ),
    ):
        c = by[name]
        if c["status"] != "skip":
            table = _side_table(c["title"], c["metrics"], keys)
            sections.append(table + "</section>" if table else "")
    head = (
        f"<header><h1>unredact verify</h1><div class='meta'>original {escape(doc['original'])} · modified "
        f"{escape(doc['modified'])} · profile {escape(doc['profile'])} · {escape(doc['created'])}</div></header>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>unredact verify</title>"
        f"<style>{CSS}{EXTRA_CSS}</style></head><body>{head}<main>{''.join(sections)}</main></body></html>"
    )
