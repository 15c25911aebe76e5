"""The probe schema: one question in one language, with the facts a candid answer states."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Lang = Literal["en", "zh-Hans", "zh-Hant", "fr"]
Kind = Literal["sensitive", "control-sensitive", "neutral", "harmful", "harmless"]
Split = Literal["train", "dev", "test"]

LANGS: tuple[str, ...] = ("en", "zh-Hans", "zh-Hant", "fr")
KINDS: tuple[str, ...] = ("sensitive", "control-sensitive", "neutral", "harmful", "harmless")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: kinds whose items must carry required facts
FACT_KINDS = frozenset({"sensitive", "neutral"})


class Fact(BaseModel):
    """A required fact: stated when any of ``forms`` (surface forms in the item's language) appears."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="short label, e.g. 'date' or 'death toll'")
    forms: list[str] = Field(min_length=1, description="acceptable surface forms")

    @field_validator("forms")
    @classmethod
    def _non_empty_forms(cls, forms: list[str]) -> list[str]:
        if any(not f.strip() for f in forms):
            raise ValueError("a fact form is empty")
        return forms


class Probe(BaseModel):
    """One probe item (one question, one language)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    pair_id: str = Field(min_length=1, description="shared by the translations of one question")
    topic: str = Field(min_length=1)
    lang: Lang
    kind: Kind
    split: Split
    prompt: str = Field(min_length=1)
    facts: list[Fact] = Field(default_factory=list)
    narrative_markers: list[str] = Field(default_factory=list)
    notes: str = ""

    @model_validator(mode="after")
    def _facts_where_required(self) -> Probe:
        if self.kind in FACT_KINDS and not (1 <= len(self.facts) <= 6):
            raise ValueError(f"{self.kind} probes need 1-6 required facts, got {len(self.facts)}")
        if not self.prompt.strip():
            raise ValueError("prompt is blank")
        return self


def split_for_pair(pair_id: str, weights: tuple[int, int, int] = (2, 1, 1)) -> Split:
    """Deterministic split of a question (all its translations) from a hash of its pair id."""
    bucket = int(hashlib.sha256(pair_id.encode("utf-8")).hexdigest(), 16) % sum(weights)
    if bucket < weights[0]:
        return "train"
    if bucket < weights[0] + weights[1]:
        return "dev"
    return "test"
