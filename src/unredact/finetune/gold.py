"""Gold answers: the candid answers (and safety refusals) the fine-tuning path teaches.

A gold file is JSONL, one ``{"id": PROBE_ID, "response": TEXT, "sources": TEXT}`` per line. Every id
must name a probe of the probe set, and only ``train``-split probes may have gold answers: the dev and
test splits stay held out, so the audit after fine-tuning measures questions the model never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from unredact.errors import UnredactError
from unredact.probes.schema import Probe
from unredact.validation import parse_jsonl_records

DEFAULT_GOLD = "default"
_BUNDLED = Path(__file__).parent / "data" / "gold_v1.jsonl"


class GoldRecord(BaseModel):
    """One line of a gold file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    response: str = Field(min_length=1)
    sources: str = ""

    @field_validator("response")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("response is blank")
        return text


@dataclass(frozen=True)
class GoldAnswer:
    """A gold answer joined to its probe."""

    probe: Probe
    response: str
    sources: str


def resolve_gold_path(spec: str) -> Path:
    return _BUNDLED if spec == DEFAULT_GOLD else Path(spec)


def gold_problems(path: Path, probes: Sequence[Probe]) -> tuple[list[GoldAnswer], list[str]]:
    """Parse ``path`` and join it to ``probes``; ``file:line: problem`` for everything wrong."""
    records, lines_of, problems = parse_jsonl_records(path, GoldRecord)
    by_id = {p.id: p for p in probes}
    answers: list[GoldAnswer] = []
    for rec in records:
        where = f"{path}:{lines_of[rec.id]}"
        probe = by_id.get(rec.id)
        if probe is None:
            problems.append(f"{where}: id {rec.id!r} is not in the probe set")
        elif probe.split != "train":
            problems.append(f"{where}: {rec.id} is a {probe.split}-split probe; gold answers are for train only")
        else:
            answers.append(GoldAnswer(probe, rec.response.strip(), rec.sources))
    if not records and not problems:
        problems.append(f"{path}: no gold answers")
    return answers, sorted(problems, key=lambda m: _line_of(m, path))


def _line_of(message: str, path: Path) -> int:
    head = message[len(str(path)) + 1 :].split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def load_gold(spec: str, probes: Sequence[Probe]) -> list[GoldAnswer]:
    """The gold answers of ``spec`` (a file, or 'default' for the bundled set); one clear error if wrong."""
    path = resolve_gold_path(spec)
    if not path.is_file():
        raise UnredactError(f"gold answer file not found: {path}")
    answers, problems = gold_problems(path, probes)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UnredactError(problems[0] + more)
    return sorted(answers, key=lambda a: a.probe.id)
