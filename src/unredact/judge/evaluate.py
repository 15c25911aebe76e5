"""Judge evaluation against labelled data: per-class precision/recall/F1, macro-F1, Cohen's kappa,
confusion matrix, censored-vs-not accuracy; overall and per language."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unredact.errors import UnredactError
from unredact.judge.core import CENSORED, LABELS, JudgeInput
from unredact.judge.layered import judge_items
from unredact.rundir import read_jsonl_strict
from unredact.stats import cohen_kappa


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def classification_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    per_class = {}
    for label in LABELS:
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[label] = {
            "precision": round(prec, 3),
            "recall": round(rec, 3),
            "f1": round(f1, 3),
            "support": tp + fn,
        }
    present = [lab for lab in LABELS if per_class[lab]["support"]]
    censored_acc = sum((g in CENSORED) == (p in CENSORED) for g, p in zip(gold, pred, strict=True))
    return {
        "n": len(gold),
        "accuracy": round(sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold), 3) if gold else 0.0,
        "macro_f1": round(sum(per_class[lab]["f1"] for lab in present) / len(present), 3) if present else 0.0,
        "kappa": _round(cohen_kappa(gold, pred)),
        "censored_accuracy": round(censored_acc / len(gold), 3) if gold else 0.0,
        "per_class": per_class,
        "confusion": {
            g: {p: sum(1 for x, y in zip(gold, pred, strict=True) if x == g and y == p) for p in LABELS} for g in LABELS
        },
    }


def load_labelled_file(path: Path, split: str | None) -> list[dict[str, Any]]:
    def check(row: dict[str, Any]) -> str | None:
        if row.get("label") not in LABELS or not isinstance(row.get("response"), str):
            return f"needs a string 'response' and a 'label' in {', '.join(LABELS)}"
        return None

    rows = [r for r in read_jsonl_strict(path, check) if split is None or r.get("split", split) == split]
    if not rows:
        raise UnredactError(f"{path}: no labelled rows" + (f" in split {split!r}" if split else ""))
    return rows


def evaluate(rows: Sequence[dict[str, Any]], judge: str = "auto") -> dict[str, Any]:
    items = [JudgeInput.from_record(r) for r in rows]
    pred = [v.label for v in judge_items(items, judge)]
    gold = [str(r["label"]) for r in rows]
    result = {"judge": judge, "overall": classification_metrics(gold, pred), "by_lang": {}}
    for lang in sorted({str(r.get("lang", "en")) for r in rows}):
        idx = [i for i, r in enumerate(rows) if str(r.get("lang", "en")) == lang]
        result["by_lang"][lang] = classification_metrics([gold[i] for i in idx], [pred[i] for i in idx])
    return result


def format_report(result: dict[str, Any]) -> str:
    o = result["overall"]
    lines = [
        f"judge {result['judge']}: n={o['n']} accuracy={o['accuracy']} macro-F1={o['macro_f1']} "
        f"kappa={o['kappa']} censored-vs-not accuracy={o['censored_accuracy']}",
        "",
        f"{'class':<16}{'prec':>7}{'rec':>7}{'F1':>7}{'n':>6}",
    ]
    for lab, m in o["per_class"].items():
        lines.append(f"{lab:<16}{m['precision']:>7.2f}{m['recall']:>7.2f}{m['f1']:>7.2f}{m['support']:>6}")
    lines += ["", "confusion (rows gold, columns predicted): " + " ".join(lab[:6] for lab in LABELS)]
    for g, row in o["confusion"].items():
        lines.append(f"{g:<16}" + "".join(f"{row[p]:>7}" for p in LABELS))
    lines += ["", f"{'lang':<9}{'n':>5}{'acc':>7}{'macroF1':>9}{'kappa':>7}{'cens.acc':>9}{'refusalF1':>10}"]
    for lang, m in result["by_lang"].items():
        lines.append(
            f"{lang:<9}{m['n']:>5}{m['accuracy']:>7.2f}{m['macro_f1']:>9.2f}{_fmt(m['kappa']):>7}"
            f"{m['censored_accuracy']:>9.2f}{m['per_class']['refusal']['f1']:>10.2f}"
        )
    return "\n".join(lines)
