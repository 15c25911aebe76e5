"""Inter-rater agreement: Cohen's kappa overall, one-vs-rest per class, and per language."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters who labelled the same items: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the share of items on which they agree; ``p_e = sum_k p_a(k) * p_b(k)`` is the agreement
    expected by chance from each rater's own class frequencies. Returns None when it is undefined: no
    items, or ``p_e == 1`` (both raters gave one and the same class to every item).
    """
    if len(a) != len(b):
        raise ValueError(f"the raters labelled different numbers of items ({len(a)} vs {len(b)})")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    p_e = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_o - p_e) / (1.0 - p_e)


@dataclass(frozen=True)
class Pair:
    """Two labels of one item (two reviewers, or a reviewer and the judge), with the item's language."""

    a: str
    b: str
    lang: str


@dataclass(frozen=True)
class KappaRow:
    name: str
    kappa: float | None
    n: int
    agreed: int

    @property
    def observed(self) -> float | None:
        return self.agreed / self.n if self.n else None


@dataclass
class KappaTable:
    """Kappa overall, for each class against the rest, and within each language."""

    overall: KappaRow
    per_class: list[KappaRow] = field(default_factory=list)
    per_lang: list[KappaRow] = field(default_factory=list)


def _row(name: str, a: Sequence[Hashable], b: Sequence[Hashable]) -> KappaRow:
    return KappaRow(name, cohen_kappa(a, b), len(a), sum(x == y for x, y in zip(a, b, strict=True)))


def kappa_table(pairs: Iterable[Pair], classes: Sequence[str]) -> KappaTable:
    """Agreement of the pairs; ``classes`` orders the one-vs-rest rows (classes seen in pairs are added)."""
    pairs = list(pairs)
    a = [p.a for p in pairs]
    b = [p.b for p in pairs]
    seen = {*a, *b}
    ordered = [c for c in classes if c in seen] + sorted(seen - set(classes))
    per_class = [_row(c, [x == c for x in a], [y == c for y in b]) for c in ordered]
    per_lang = []
    for lang in sorted({p.lang for p in pairs}):
        subset = [p for p in pairs if p.lang == lang]
        per_lang.append(_row(lang or "?", [p.a for p in subset], [p.b for p in subset]))
    return KappaTable(overall=_row("all", a, b), per_class=per_class, per_lang=per_lang)


def confusion(pairs: Iterable[Pair], classes: Sequence[str]) -> tuple[list[str], dict[tuple[str, str], int]]:
    """Counts of (a, b) label combinations and the classes that label its rows and columns."""
    counts = Counter((p.a, p.b) for p in pairs)
    seen = {x for key in counts for x in key}
    return [c for c in classes if c in seen] + sorted(seen - set(classes)), dict(counts)
