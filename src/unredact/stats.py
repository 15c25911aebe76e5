"""Small statistics shared by the judge evaluation and the review app."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


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
