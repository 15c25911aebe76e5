"""Probe set statistics as rich tables."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from unredact.probes.loader import load_probes
from unredact.ui import console


def print_stats(spec: str) -> None:
    probes = load_probes(spec)
    kinds = Counter(p.kind for p in probes)
    langs = sorted({p.lang for p in probes})
    table = Table(title=f"{len(probes)} probes, {len({p.pair_id for p in probes})} questions")
    for col in ("kind", "topics", "questions", *langs, "train", "dev", "test"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for kind in sorted(kinds):
        items = [p for p in probes if p.kind == kind]
        by_lang = Counter(p.lang for p in items)
        by_split = Counter(p.split for p in items)
        table.add_row(
            kind,
            str(len({p.topic for p in items})),
            str(len({p.pair_id for p in items})),
            *(str(by_lang[lang]) for lang in langs),
            *(str(by_split[s]) for s in ("train", "dev", "test")),
        )
    console.print(table)
