"""Inter-rater agreement: Cohen's kappa overall, one-vs-rest per class, and per language."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from unredact.stats import cohen_kappa

__all__ = ["Pair", "cohen_kappa", "kappa_table"]


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
