"""Multiple-choice knowledge scored by option log-likelihood (zero-shot, lm-eval style).

Each item becomes four requests ``(prompt, option)`` with a plain prompt in the item's language
("Question: ...\\nAnswer:", "问题：...\\n答案：", ...); the option is the continuation (after a space in
English and French). Two predictions per item:

- ``acc``: the option with the highest summed log-probability;
- ``acc_norm``: the highest log-probability per UTF-8 byte of the option (lm-eval's ``acc_norm``),
  which does not favour short options. This is the headline metric.

Accuracy is reported with Wilson 95% intervals, per language and overall; the comparison of two
models also counts the items each one alone gets right (a paired view that is more sensitive than
two overlapping intervals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from unredact.report.metrics import wilson
from unredact.verify.items import KnowledgeItem
from unredact.verify.loglik import continuation_logliks

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

PROMPTS: dict[str, str] = {
    "en": "Question: {q}\nAnswer:",
    "zh-Hans": "问题：{q}\n答案：",
    "zh-Hant": "問題：{q}\n答案：",
    "fr": "Question : {q}\nRéponse :",
}
_SPACED = {"en", "fr"}
METRICS: tuple[str, ...] = ("acc_norm", "acc")


def item_requests(item: KnowledgeItem) -> list[tuple[str, str]]:
    prompt = PROMPTS[item.lang].format(q=item.question.strip())
    sep = " " if item.lang in _SPACED else ""
    return [(prompt, sep + c.strip()) for c in item.choices]


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: xs[i])


def score_knowledge(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[KnowledgeItem],
    *,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """One record per item: option log-probs, both predictions and whether they are right."""
    requests = [r for item in items for r in item_requests(item)]
    lls = continuation_logliks(model, tokenizer, requests, batch_size=batch_size, progress=progress)
    out = []
    for i, item in enumerate(items):
        scores = lls[4 * i : 4 * i + 4]
        lp = [s.logprob for s in scores]
        sizes = [max(1, len(c.strip().encode("utf-8"))) for c in item.choices]
        per_byte = [s.logprob / n for s, n in zip(scores, sizes, strict=True)]
        pred, pred_norm = _argmax(lp), _argmax(per_byte)
        out.append(
            {
                "id": item.id,
                "qid": item.qid,
                "lang": item.lang,
                "domain": item.domain,
                "answer": item.answer,
                "logprobs": [round(x, 5) for x in lp],
                "pred": pred,
                "pred_norm": pred_norm,
                "acc": pred == item.answer,
                "acc_norm": pred_norm == item.answer,
            }
        )
    return out


def accuracy(records: Sequence[dict[str, Any]], metric: str = "acc_norm", key: str = "lang") -> dict[str, Any]:
    """``{"all": wilson, <group>: wilson, ...}`` for ``metric`` grouped by ``key``."""
    out: dict[str, Any] = {"all": wilson(sum(bool(r[metric]) for r in records), len(records))}
    for group in sorted({str(r[key]) for r in records}):
        rows = [r for r in records if str(r[key]) == group]
        out[group] = wilson(sum(bool(r[metric]) for r in rows), len(rows))
    return out


def paired_changes(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], metric: str = "acc_norm"
) -> dict[str, int]:
    """Items right only before (``lost``) and right only after (``gained``), on the items both scored."""
    a = {r["id"]: bool(r[metric]) for r in after}
    both = [(bool(r[metric]), a[r["id"]]) for r in before if r["id"] in a]
    return {
        "items": len(both),
        "lost": sum(1 for x, y in both if x and not y),
        "gained": sum(1 for x, y in both if y and not x),
    }
