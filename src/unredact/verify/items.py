"""Multiple-choice knowledge items for ``unredact verify``: schema, loader, validation and selection."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from unredact.errors import UnredactError
from unredact.probes.schema import LANGS, Lang
from unredact.validation import parse_jsonl_records

__all__ = [
    "DEFAULT_KNOWLEDGE",
    "LANGS",
    "KnowledgeItem",
    "default_knowledge_path",
    "knowledge_hash",
    "load_knowledge",
    "resolve_knowledge_path",
    "select_knowledge",
    "validate_knowledge_file",
]

DEFAULT_KNOWLEDGE = "default"
N_CHOICES = 4


class KnowledgeItem(BaseModel):
    """One multiple-choice question in one language; ``answer`` indexes ``choices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    qid: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$", description="shared by the translations")
    lang: Lang
    domain: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    question: str = Field(min_length=1)
    choices: list[str] = Field(min_length=N_CHOICES, max_length=N_CHOICES)
    answer: int = Field(ge=0, le=N_CHOICES - 1, strict=True)
    source: str = ""

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("question is blank")
        return question

    @field_validator("choices")
    @classmethod
    def _choices_distinct(cls, choices: list[str]) -> list[str]:
        if any(not c.strip() for c in choices):
            raise ValueError("a choice is blank")
        if len({c.strip() for c in choices}) != len(choices):
            raise ValueError("choices are not unique")
        return choices


def default_knowledge_path() -> Path:
    """The bundled item set."""
    return Path(str(resources.files("unredact.verify") / "data" / "knowledge_v1.jsonl"))


def resolve_knowledge_path(spec: str | Path) -> Path:
    return default_knowledge_path() if str(spec) == DEFAULT_KNOWLEDGE else Path(spec)


def validate_knowledge_file(path: Path) -> tuple[list[KnowledgeItem], list[str]]:
    """Parse every line; return the valid items and a list of ``file:line: problem`` messages."""
    items, lines_of, problems = parse_jsonl_records(path, KnowledgeItem)
    problems.extend(_cross_item_problems(path, items, lines_of))
    if not items and not problems:
        problems.append(f"{path}: no knowledge items in file")
    return items, problems


def _cross_item_problems(path: Path, items: Sequence[KnowledgeItem], lines_of: dict[str, int]) -> list[str]:
    """Translations of one question share domain, answer and number of choices, one item per language."""
    problems: list[str] = []
    by_qid: dict[str, list[KnowledgeItem]] = defaultdict(list)
    for it in items:
        by_qid[it.qid].append(it)
    for qid, group in by_qid.items():
        first = group[0]
        first_line = lines_of[first.id]
        seen_langs: set[str] = set()
        for it in group:
            line = lines_of[it.id]
            for attr, value, ref in (
                ("domain", it.domain, first.domain),
                ("answer", it.answer, first.answer),
                ("number of choices", len(it.choices), len(first.choices)),
            ):
                if value != ref:
                    problems.append(
                        f"{path}:{line}: qid {qid!r} has {attr} {value!r} here but {ref!r} on line {first_line} "
                        "(translations must agree)"
                    )
            if it.lang in seen_langs:
                problems.append(f"{path}:{line}: qid {qid!r} has two {it.lang} items")
            seen_langs.add(it.lang)
    return problems


def load_knowledge(spec: str | Path = DEFAULT_KNOWLEDGE) -> list[KnowledgeItem]:
    """Load a knowledge file (or the bundled set); raise one clear error if anything is wrong."""
    path = resolve_knowledge_path(spec)
    if not path.exists():
        raise UnredactError(f"knowledge file not found: {path}")
    if not path.is_file():
        raise UnredactError(f"knowledge file is not a file: {path}")
    items, problems = validate_knowledge_file(path)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UnredactError(problems[0] + more)
    return items


def select_knowledge(
    items: Sequence[KnowledgeItem],
    *,
    langs: Sequence[str] | None = None,
    per_lang_limit: int | None = None,
) -> list[KnowledgeItem]:
    """Filter by language; ``per_lang_limit`` keeps N questions (all translations), round-robin over domains."""
    out = [it for it in items if not langs or it.lang in langs]
    if per_lang_limit is None:
        return out
    if per_lang_limit < 0:
        raise UnredactError(f"per-language knowledge limit must be >= 0, got {per_lang_limit}")
    qids_by_domain: dict[str, list[str]] = {}
    for it in out:
        qids = qids_by_domain.setdefault(it.domain, [])
        if it.qid not in qids:
            qids.append(it.qid)
    keep: set[str] = set()
    depth = 0
    while len(keep) < per_lang_limit and any(depth < len(q) for q in qids_by_domain.values()):
        for qids in qids_by_domain.values():
            if depth < len(qids) and len(keep) < per_lang_limit:
                keep.add(qids[depth])
        depth += 1
    return [it for it in out if it.qid in keep]


def knowledge_hash(items: Iterable[KnowledgeItem]) -> str:
    """Stable hash of an item selection (order-independent)."""
    h = hashlib.sha256()
    for line in sorted(it.model_dump_json() for it in items):
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
