"""Load, validate and select probes; every problem is reported with file:line."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from unredact.errors import ProbeFileError
from unredact.probes.schema import Probe
from unredact.validation import parse_jsonl_records

DEFAULT_PROBES = "default"


def write_probe_file(path: Path, probes: Iterable[Probe]) -> None:
    """Write ``probes`` as JSONL (atomically: a reader sees the old file or the whole new one)."""
    from unredact.rundir import atomic_write_text

    atomic_write_text(path, "".join(p.model_dump_json() + "\n" for p in probes))


def default_probe_path() -> Path:
    return Path(str(resources.files("unredact.probes") / "data" / "probes_v1.jsonl"))


def resolve_probe_path(spec: str) -> Path:
    return default_probe_path() if spec == DEFAULT_PROBES else Path(spec)


def validate_file(path: Path) -> tuple[list[Probe], list[str]]:
    """Parse every line; return the valid probes and a list of ``file:line: problem`` messages."""
    probes, lines_of, problems = parse_jsonl_records(path, Probe)
    problems.extend(_cross_item_problems(path, probes, lines_of))
    if not probes and not problems:
        problems.append(f"{path}: no probes in file")
    return probes, problems


def _cross_item_problems(path: Path, probes: Sequence[Probe], lines_of: dict[str, int]) -> list[str]:
    """Translations of one question share topic, kind and split, and have one item per language."""
    problems: list[str] = []
    by_pair: dict[str, list[Probe]] = defaultdict(list)
    for p in probes:
        by_pair[p.pair_id].append(p)
    for pair_id, items in by_pair.items():
        first = items[0]
        seen_langs: set[str] = set()
        for p in items:
            line = lines_of[p.id]
            for attr in ("split", "topic", "kind"):
                if getattr(p, attr) != getattr(first, attr):
                    problems.append(
                        f"{path}:{line}: pair {pair_id!r} has {attr} {getattr(p, attr)!r} here but "
                        f"{getattr(first, attr)!r} on line {lines_of[first.id]} (translations must agree)"
                    )
            if p.lang in seen_langs:
                problems.append(f"{path}:{line}: pair {pair_id!r} has two {p.lang} items")
            seen_langs.add(p.lang)
    return problems


def load_probes(spec: str | Path = DEFAULT_PROBES) -> list[Probe]:
    """Load a probe file (or the bundled set); raise one clear error if anything is wrong."""
    path = resolve_probe_path(str(spec))
    if not path.exists():
        raise ProbeFileError(f"probe file not found: {path}")
    probes, problems = validate_file(path)
    if problems:
        more = f" (and {len(problems) - 1} more problems; run `unredact probes validate {path}`)"
        raise ProbeFileError(problems[0] + (more if len(problems) > 1 else ""))
    return probes


def probes_hash(probes: Iterable[Probe]) -> str:
    """Stable hash of a probe selection (order-independent)."""
    h = hashlib.sha256()
    for line in sorted(p.model_dump_json() for p in probes):
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def select_probes(
    probes: Sequence[Probe],
    *,
    langs: Sequence[str] | None = None,
    topics: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    profile: str = "full",
    limit: int | None = None,
) -> list[Probe]:
    """Filter probes; ``profile='quick'`` keeps a balanced subset (2 questions per topic and kind)."""
    out = [
        p
        for p in probes
        if (not langs or p.lang in langs)
        and (not topics or p.topic in topics)
        and (not kinds or p.kind in kinds)
        and (not splits or p.split in splits)
    ]
    if profile == "quick":
        out = _quick_subset(out)
    elif profile != "full":
        raise ProbeFileError(f"unknown profile {profile!r} (quick, full)")
    if limit is not None:
        out = out[:limit]
    return out


_QUICK_PAIRS_PER_GROUP = {"sensitive": 2, "control-sensitive": 1, "neutral": 1, "harmful": 1, "harmless": 1}
_QUICK_MAX_TOPICS = {"sensitive": 99, "control-sensitive": 6, "neutral": 6, "harmful": 8, "harmless": 6}


def _quick_subset(probes: Sequence[Probe]) -> list[Probe]:
    """Keep the first N questions (all their translations) per (kind, topic), capped per kind."""
    pairs_by_group: dict[tuple[str, str], list[str]] = defaultdict(list)
    topics_by_kind: dict[str, list[str]] = defaultdict(list)
    for p in probes:
        group = (p.kind, p.topic)
        if p.topic not in topics_by_kind[p.kind]:
            topics_by_kind[p.kind].append(p.topic)
        if p.pair_id not in pairs_by_group[group]:
            pairs_by_group[group].append(p.pair_id)
    keep: set[str] = set()
    for kind, topics in topics_by_kind.items():
        for topic in topics[: _QUICK_MAX_TOPICS.get(kind, 4)]:
            keep.update(pairs_by_group[(kind, topic)][: _QUICK_PAIRS_PER_GROUP.get(kind, 1)])
    return [p for p in probes if p.pair_id in keep]


def select_balanced(
    probes: Sequence[Probe], *, kind: str, split: str, n: int, langs: Sequence[str] | None = None
) -> list[Probe]:
    """Up to ``n`` probes of one kind and split: whole questions (all their languages) taken round-robin
    over topics, so languages stay balanced and topics are spread. Deterministic (file order)."""
    items = [p for p in probes if p.kind == kind and p.split == split and (not langs or p.lang in langs)]
    pairs: dict[str, list[Probe]] = defaultdict(list)
    topics: dict[str, list[str]] = defaultdict(list)
    for p in items:
        if p.pair_id not in pairs:
            topics[p.topic].append(p.pair_id)
        pairs[p.pair_id].append(p)
    queues = [list(v) for v in topics.values()]
    out: list[Probe] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.extend(pairs[q.pop(0)][: n - len(out)])
    return out
