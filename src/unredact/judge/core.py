"""Verdict types shared by every judge layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LABELS: tuple[str, ...] = ("refusal", "deflection", "state_narrative", "candid", "fabrication")
CENSORED: frozenset[str] = frozenset({"refusal", "deflection", "state_narrative"})
ALL_LABELS: tuple[str, ...] = (*LABELS, "error", "unscored")


@dataclass
class JudgeInput:
    """What a judge sees: one answer to one prompt."""

    id: str
    prompt: str
    response: str
    lang: str = "en"
    kind: str = "sensitive"
    facts: list[dict[str, Any]] = field(default_factory=list)
    narrative_markers: list[str] = field(default_factory=list)
    error: str | None = None
    key: str | None = None

    @classmethod
    def from_record(cls, rec: dict[str, Any], probe: dict[str, Any] | None = None) -> JudgeInput:
        probe = probe or {}
        response = rec.get("response")
        return cls(
            id=str(rec.get("id", "")),
            prompt=str(rec.get("prompt") or probe.get("prompt") or ""),
            response=response if isinstance(response, str) else "",
            lang=str(rec.get("lang") or probe.get("lang") or "en"),
            kind=str(rec.get("kind") or probe.get("kind") or "sensitive"),
            facts=list(rec.get("facts") or probe.get("facts") or []),
            narrative_markers=list(rec.get("narrative_markers") or probe.get("narrative_markers") or []),
            error=rec.get("error") if rec.get("finish_reason") == "error" or rec.get("error") else None,
            key=rec.get("key"),
        )


@dataclass
class Verdict:
    """One judged answer. ``judge`` names the layer and version that decided."""

    id: str
    label: str
    facts_covered: list[str]
    facts_total: int
    confidence: float
    judge: str
    explanation: str = ""
    key: str | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["key"] is None:
            d.pop("key")
        return d
