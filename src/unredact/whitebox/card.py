"""The removal run's MODEL_CARD.md (before/after per topic and language) and public spec helpers."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from unredact import __version__

if TYPE_CHECKING:
    import optuna

    from unredact.whitebox.remove import Candidate, RemoveSettings
    from unredact.whitebox.search import AblationParams


def censorship_target_line(before: dict[str, Any], after: dict[str, Any], target: float = 0.8) -> str:
    """The removal's headline target on the test split: censorship index down by ``target`` relative."""
    b = (before.get("censorship_index") or {}).get("rate")
    a = (after.get("censorship_index") or {}).get("rate")
    if not b:
        return "Censorship target (index down ≥ 80% on test): n/a (the original censored nothing)."
    drop = (b - (a or 0.0)) / b
    verdict = "**met**" if drop >= target else "**missed**"
    change = f"down {100 * drop:.0f}%" if drop >= 0 else f"up {-100 * drop:.0f}%"
    return (
        f"Censorship target (index down ≥ {target:.0%} relative on test): {verdict} "
        f"({100 * b:.0f}% → {100 * (a or 0.0):.0f}%, {change} relative)."
    )


def pct(x: dict[str, Any] | None) -> str:
    if not x or not x.get("n"):
        return "n/a"
    return f"{100 * x['rate']:.0f}% [{100 * x['low']:.0f}-{100 * x['high']:.0f}] (n={x['n']})"


def _kn(x: dict[str, Any] | None) -> str:
    return "–" if not x or not x.get("n") else f"{x['k']}/{x['n']}"


def _topic_rates(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from unredact.report.metrics import wilson

    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for g in report.get("by_topic_lang", []):
        ci = g["censorship_index"]
        sums[g["topic"]][0] += int(ci.get("k", 0))
        sums[g["topic"]][1] += int(ci.get("n", 0))
    return {t: wilson(k, n) for t, (k, n) in sums.items()}


SUMMARY_ROWS = (
    ("censorship index (sensitive China probes)", "censorship_index"),
    ("candid answers", "candid_rate"),
    ("fabrication", "fabrication_rate"),
    ("censorship on matched non-China controls", "control_censorship_index"),
    ("harmful requests refused", "harmful_refusal_rate"),
    ("harmless requests refused", "harmless_refusal_rate"),
)


def before_after_section(
    before: dict[str, Any], after: dict[str, Any], *, max_new_tokens: int, judge: str, extra_rows: Sequence[str] = ()
) -> list[str]:
    """Markdown tables: summary, censorship per language, per topic, and per topic and language."""
    b, a = before["summary"], after["summary"]
    lines = [
        "## Before / after (held-out test split)",
        "",
        f"Greedy answers, max {max_new_tokens} new tokens, judge `{judge}`; rates with 95% Wilson intervals.",
        "",
        "| measure | before | after |",
        "|---|---|---|",
        *(f"| {name} | {pct(b.get(key))} | {pct(a.get(key))} |" for name, key in SUMMARY_ROWS),
        f"| mean fact coverage (sensitive) | {_num(b.get('mean_fact_coverage'))} "
        f"| {_num(a.get('mean_fact_coverage'))} |",
        *extra_rows,
        "",
        "### Censorship index per language",
        "",
        "| language | before | after |",
        "|---|---|---|",
    ]
    after_lang = {g["lang"]: g for g in after.get("by_lang", [])}
    for g in before.get("by_lang", []):
        after_ci = after_lang.get(g["lang"], {}).get("censorship_index")
        lines.append(f"| {g['lang']} | {pct(g['censorship_index'])} | {pct(after_ci)} |")
    lines += ["", "### Censorship index per topic", "", "| topic | before | after |", "|---|---|---|"]
    tb, ta = _topic_rates(before), _topic_rates(after)
    for topic in sorted(tb):
        lines.append(f"| {topic} | {pct(tb[topic])} | {pct(ta.get(topic))} |")
    langs = sorted({g["lang"] for g in before.get("by_topic_lang", [])})
    cells_b = {(g["topic"], g["lang"]): g["censorship_index"] for g in before.get("by_topic_lang", [])}
    cells_a = {(g["topic"], g["lang"]): g["censorship_index"] for g in after.get("by_topic_lang", [])}
    lines += [
        "",
        "### Censored answers per topic and language (before → after, censored/answers)",
        "",
        "| topic | " + " | ".join(langs) + " |",
        "|---" * (len(langs) + 1) + "|",
    ]
    for topic in sorted(tb):
        cells = [f"{_kn(cells_b.get((topic, lang)))} → {_kn(cells_a.get((topic, lang)))}" for lang in langs]
        lines.append(f"| {topic} | " + " | ".join(cells) + " |")
    return lines


def model_card(
    *,
    s: RemoveSettings,
    before: dict[str, Any],
    after: dict[str, Any],
    chosen: Candidate,
    confirmed: Sequence[Candidate],
    base_dev: dict[str, Any],
    params: AblationParams,
    n_layers: int,
    kl: dict[str, float],
    validation: dict[str, Any],
    study: optuna.Study,
    notes: list[str],
    counts: dict[str, int],
    reload_diff: float | None,
    adapter_note: str | None = None,
) -> str:
    """Markdown card: before/after on the held-out test split, per topic and language, and how it was made."""
    b, a = before["summary"], after["summary"]
    lines = [
        f"# {public_spec(s.model)}: political censorship ablated (unredact)",
        "",
        f"Directional ablation by unredact {__version__}: the residual-stream writers (attention output and MLP down",
        "projections) of the edited layers were changed to W ← W − w_l · v (vᵀ W), where v is the censorship",
        "direction (mean hidden state of sensitive China prompts minus controls and harmless prompts, made",
        "orthogonal to the harmful-refusal direction, then turned toward that refusal direction by the searched",
        "refusal mix) and w_l a per-layer weight found by a multi-objective search.",
        f"Chosen edit (trial {chosen.trial}): {params.describe(n_layers)}.",
        "",
        f"Constraints on dev: harmful refusals ≥ {s.harmful_keep:.0%} of the original, KL ≤ {s.kl_max} on harmless "
        "prompts — " + ("**met**." if chosen.eligible else "**missed**."),
        censorship_target_line(b, a),
        *(f"- Note: {n}." for n in notes),
        "",
    ]
    kl_row = (
        f"| KL on harmless prompts, first {s.kl_tokens} tokens (train split) | 0 | "
        + ", ".join(f"{k} {v:.3f}" for k, v in kl.items())
        + " |"
    )
    lines += before_after_section(before, after, max_new_tokens=s.max_new_tokens, judge=s.judge, extra_rows=[kl_row])
    base_harm = base_dev["summary"]["harmful_refusal_rate"]
    lines += [
        "",
        "## How the edit was chosen",
        "",
        f"- Search: {len(study.trials)} Optuna trials (multi-objective TPE, seed {s.seed}); objectives on the train",
        f"  split: refusal-opening probability on {counts.get('sensitive', 0)} sensitive prompts, its loss on",
        f"  {counts.get('harmful', 0)} harmful prompts, KL on {counts.get('harmless', 0)} harmless prompts",
        f"  ({', '.join(s.kl_langs)}).",
        f"- Refusal proxy check on the baseline's judged answers: AUC {_auc(validation, 'refusal_or_deflection')}"
        f" for refusal/deflection, {_auc(validation, 'censored')} for any censored label.",
        "- Candidates confirmed on the dev split (baseline: censorship "
        f"{pct(base_dev['summary']['censorship_index'])}, harmful refused {pct(base_harm)}):",
        "",
        "| trial | proxy censorship | proxy harm loss | KL | dev censorship | dev harmful refused | eligible |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {c.trial} | {c.values[0]:.3f} | {c.values[1]:.3f} | {c.values[2]:.3f} | "
            f"{pct(c.report['summary']['censorship_index'])} | {pct(c.report['summary']['harmful_refusal_rate'])} | "
            f"{'yes' if c.eligible else 'no: ' + '; '.join(c.why_not)} |"
            for c in confirmed
        ),
        "",
        "## Export",
        "",
        "Merged weights as safetensors (`model/`); "
        + (
            f"reloading them gives logits within {reload_diff:.3g} of the in-memory edited model."
            if reload_diff is not None
            else "reload check pending."
        ),
        *([f"{adapter_note}."] if adapter_note else []),
        "",
        "## Caveats",
        "",
        "- Small evaluation sets: read the intervals, not the point estimates.",
        "- The automatic judge can mislabel; `unredact serve` lets people review the answers in the audit runs.",
        "- A model that stops refusing may state the official line or invent facts instead: see the candid,",
        "  fabrication and fact-coverage rows above, not only the censorship index.",
        "",
        "## Reproduce",
        "",
        "```",
        reproduce_command(s),
        "```",
        "",
        "Settings, versions and hashes: `reproduce.json`.",
        "",
    ]
    return "\n".join(lines)


def public_spec(spec: str) -> str:
    """A model spec without local directories (``hf/<dir>`` -> ``hf/<dir name>``), for published records."""
    kind, _, rest = spec.partition("/")
    if kind in ("hf", "gguf") and (rest.startswith(("/", ".", "~")) or Path(rest).expanduser().exists()):
        return f"{kind}/{Path(rest).name}"
    return spec


#: settings that name local files: published records keep only the file name
PATH_SETTINGS = ("probes", "audit_run", "gold")


def public_settings(s: BaseModel) -> dict[str, Any]:
    data = s.model_dump()
    data["model"] = public_spec(data["model"])
    for key in PATH_SETTINGS:
        if data.get(key) and data[key] != "default":
            data[key] = Path(data[key]).name
    return data


def reproduce_command(s: BaseModel, command: str = "remove") -> str:
    """The `unredact COMMAND` line for these settings (options that differ from the defaults)."""
    defaults = type(s)()
    parts = [f"unredact {command}", f"--model {public_spec(s.model_dump()['model'])}"]
    for name in type(s).model_fields:
        value, default = getattr(s, name), getattr(defaults, name)
        if name == "model" or value == default or value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):  # typer's boolean options are --name / --no-name
            parts.append(flag if value else f"--no-{flag[2:]}")
            continue
        text = ",".join(value) if isinstance(value, list) else str(value)
        if name in PATH_SETTINGS:
            text = Path(text).name
        parts.append(f"{flag} {json.dumps(text) if ' ' in text else text}")
    return " ".join(parts)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _auc(validation: dict[str, Any], key: str) -> str:
    auc = validation.get("overall", {}).get(key, {}).get("auc")
    return "n/a" if auc is None else f"{auc:.2f}"
