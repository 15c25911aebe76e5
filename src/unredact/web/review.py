"""Review logic over plain values: who labels what next, what needs adjudication, what is exported."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unredact.web.agreement import Pair
from unredact.web.db import AdjudicationRecord, LabelRecord
from unredact.web.runs import Item

#: independent labels wanted per item
LABELS_PER_ITEM = 2
#: how much an item's kind raises its priority in the queue (judge uncertainty adds up to 1 more)
KIND_PRIORITY: dict[str, float] = {"sensitive": 1.0, "control-sensitive": 0.5}
HUMAN_LABELS_FILE = "human_labels.jsonl"


def by_key(labels: Iterable[LabelRecord]) -> dict[str, list[LabelRecord]]:
    """Labels grouped per item, oldest first (the first two are the item's independent pair)."""
    grouped: dict[str, list[LabelRecord]] = defaultdict(list)
    for label in sorted(labels, key=lambda r: r.id):
        grouped[label.key].append(label)
    return dict(grouped)


def uncertainty(item: Item) -> float:
    """1 - the judge's confidence; 1 when the judge gave no usable verdict."""
    v = item.verdict
    if v is None or v.label in ("unscored", "") or v.confidence is None:
        return 1.0
    return 1.0 - min(max(v.confidence, 0.0), 1.0)


def priority(item: Item) -> float:
    """Higher first: sensitive items, then items the judge is unsure about."""
    return KIND_PRIORITY.get(item.kind, 0.0) + uncertainty(item)


def _spread(run: str, key: str) -> float:
    # a stable pseudo-random tie-break, the same for every reviewer so that their pairs complete
    return int.from_bytes(hashlib.sha256(f"{run}\0{key}".encode()).digest()[:4], "big") / 2**32


def queue(
    run: str,
    items: Iterable[Item],
    labels: Mapping[str, Sequence[LabelRecord]],
    user: str,
    skipped: Mapping[str, int] | None = None,
) -> list[Item]:
    """The items ``user`` may label, best first.

    An item leaves everyone's queue once it has two labels and never comes back to a reviewer who
    labelled it. Items that already have one label come first (so pairs complete), then by
    ``priority``, with a stable shuffle among equals; items this user skipped go last, oldest skip first.
    """
    skipped = skipped or {}
    open_items = []
    for it in items:
        done = labels.get(it.key, ())
        if len(done) < LABELS_PER_ITEM and all(lb.user != user for lb in done):
            open_items.append(it)

    def order(it: Item) -> tuple[Any, ...]:
        n = len(labels.get(it.key, ()))
        return (it.key in skipped, skipped.get(it.key, 0), -n, -round(priority(it), 6), _spread(run, it.key))

    return sorted(open_items, key=order)


@dataclass(frozen=True)
class Pending:
    """An item whose final label needs an adjudicator, and why."""

    item: Item
    labels: tuple[LabelRecord, ...]
    reason: str


def adjudication_reason(pair: Sequence[LabelRecord], judge_label: str | None) -> str | None:
    """Why two labels need adjudication: the reviewers disagree, or agree against the judge."""
    if len(pair) < LABELS_PER_ITEM:
        return None
    a, b = pair[0].label, pair[1].label
    if a != b:
        return "reviewers disagree"
    if judge_label is not None and a != judge_label:
        return "reviewers differ from the judge"
    return None


def to_adjudicate(items: Iterable[Item], labels: Mapping[str, Sequence[LabelRecord]]) -> list[Pending]:
    """Doubly-labelled items that need an adjudicator (done or not), disagreements first."""
    pending = []
    for it in items:
        pair = tuple(labels.get(it.key, ())[:LABELS_PER_ITEM])
        reason = adjudication_reason(pair, it.verdict.label if it.verdict else None)
        if reason:
            pending.append(Pending(it, pair, reason))
    pending.sort(key=lambda p: p.reason != "reviewers disagree")
    return pending


def reviewer_pairs(items: Mapping[str, Item], labels: Mapping[str, Sequence[LabelRecord]]) -> list[Pair]:
    """The first two labels of every doubly-labelled item."""
    pairs = []
    for key, ls in labels.items():
        if len(ls) >= LABELS_PER_ITEM and key in items:
            pairs.append(Pair(ls[0].label, ls[1].label, items[key].lang))
    return pairs


def judge_pairs(items: Mapping[str, Item], labels: Mapping[str, Sequence[LabelRecord]]) -> list[Pair]:
    """Every human label against the automatic verdict of the same item (items without one are left out)."""
    pairs = []
    for key, ls in labels.items():
        item = items.get(key)
        if item is None or item.verdict is None:
            continue
        pairs.extend(Pair(lb.label, item.verdict.label, item.lang) for lb in ls)
    return pairs


def final_labels(
    run: str,
    items: Iterable[Item],
    labels: Mapping[str, Sequence[LabelRecord]],
    adjudications: Mapping[str, AdjudicationRecord],
) -> list[dict[str, Any]]:
    """The human label of each settled item, in run order, as ``human_labels.jsonl`` records.

    Settled: adjudicated (the adjudicator's label, facts and note), or two reviewers who agree (their
    label, the facts both ticked, their notes joined). Disagreements wait for adjudication.
    """
    records = []
    for item in items:
        ls = list(labels.get(item.key, ()))
        reviewers = [lb.user for lb in ls]
        adj = adjudications.get(item.key)
        if adj is not None:
            label, facts, note, adjudicator = adj.label, list(adj.facts_covered), adj.note, adj.adjudicator
        elif len(ls) >= LABELS_PER_ITEM and ls[0].label == ls[1].label:
            both = set(ls[0].facts_covered) & set(ls[1].facts_covered)
            label = ls[0].label
            facts = [f for f in ls[0].facts_covered if f in both]
            note = " | ".join(lb.note.strip() for lb in ls if lb.note.strip())
            adjudicator = None
        else:
            continue
        records.append(
            {
                "id": item.id,
                "key": item.key,
                "run": run,
                "prompt": item.prompt,
                "response": item.response,
                "lang": item.lang,
                "kind": item.kind,
                "label": label,
                "facts_covered": facts,
                "source": "human",
                "reviewers": reviewers,
                "adjudicator": adjudicator,
                "note": note,
            }
        )
    return records


def to_jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_atomic(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` so that readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
