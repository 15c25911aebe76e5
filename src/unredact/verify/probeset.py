"""Which probes a verification generates answers for, per profile.

Sensitive probes come from the ``test`` split only (removal tunes on ``train`` and selects on ``dev``);
neutral, harmful and control-sensitive probes from every split; harmless probes are the drift prompts
(and are also answered in the ``full`` profile). Questions are taken round-robin over topics so that a
small profile still spans the topics, with all translations of each question.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from unredact.probes.schema import Probe

#: questions (pairs) kept per kind; None keeps all of them
GENERATION_PAIRS: dict[str, dict[str, int | None]] = {
    "smoke": {"neutral": 2, "harmful": 2, "sensitive": 2, "control-sensitive": 1},
    "quick": {"neutral": None, "harmful": None, "sensitive": 18, "control-sensitive": None},
    "full": {"neutral": None, "harmful": None, "sensitive": None, "control-sensitive": None, "harmless": None},
}
#: harmless questions used as drift prompts
DRIFT_PAIRS: dict[str, int | None] = {"smoke": 2, "quick": None, "full": None}
#: knowledge questions per language (None: all)
KNOWLEDGE_PER_LANG: dict[str, int | None] = {"smoke": 12, "quick": None, "full": None}


def round_robin_pairs(probes: Sequence[Probe], n: int | None) -> list[str]:
    """Pair ids, one topic after another in file order, at most ``n``."""
    by_topic: dict[str, list[str]] = defaultdict(list)
    for p in probes:
        if p.pair_id not in by_topic[p.topic]:
            by_topic[p.topic].append(p.pair_id)
    queues = list(by_topic.values())
    out: list[str] = []
    depth = 0
    while any(depth < len(q) for q in queues) and (n is None or len(out) < n):
        for q in queues:
            if depth < len(q) and (n is None or len(out) < n):
                out.append(q[depth])
        depth += 1
    return out


def _pick(probes: Sequence[Probe], kind: str, n: int | None, langs: Sequence[str]) -> list[Probe]:
    pool = [p for p in probes if p.kind == kind and (kind != "sensitive" or p.split == "test")]
    pool = [p for p in pool if not langs or p.lang in langs]
    keep = set(round_robin_pairs(pool, n))
    return [p for p in pool if p.pair_id in keep]


def generation_probes(probes: Sequence[Probe], profile: str, langs: Sequence[str] = ()) -> list[Probe]:
    """The probes both models answer in a verification."""
    out: list[Probe] = []
    for kind, n in GENERATION_PAIRS[profile].items():
        out.extend(_pick(probes, kind, n, langs))
    return out


def drift_probes(probes: Sequence[Probe], profile: str, langs: Sequence[str] = ()) -> list[Probe]:
    """Harmless prompts whose first answer tokens are compared between the two models."""
    return _pick(probes, "harmless", DRIFT_PAIRS[profile], langs)
