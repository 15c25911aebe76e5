"""Knowledge items for verify: the bundled set is complete and balanced; every problem has a file:line."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from unredact.errors import UnredactError
from unredact.verify.items import (
    LANGS,
    KnowledgeItem,
    default_knowledge_path,
    knowledge_hash,
    load_knowledge,
    select_knowledge,
    validate_knowledge_file,
)

GOOD = {
    "id": "q-01-en",
    "qid": "q-01",
    "lang": "en",
    "domain": "math",
    "question": "What is 2 + 2?",
    "choices": ["3", "4", "5", "6"],
    "answer": 1,
    "source": "arithmetic",
}
GOOD_FR = {**GOOD, "id": "q-01-fr", "lang": "fr", "question": "Combien font 2 + 2 ?"}


def _write(tmp_path: Path, lines: list[str] | bytes) -> Path:
    path = tmp_path / "k.jsonl"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bundled() -> list[KnowledgeItem]:
    return load_knowledge()


def test_bundled_file_loads_and_is_large_enough(bundled: list[KnowledgeItem]) -> None:
    assert default_knowledge_path().is_file()
    assert len(bundled) >= 300
    assert len({it.id for it in bundled}) == len(bundled)


def test_every_question_has_all_four_languages(bundled: list[KnowledgeItem]) -> None:
    langs_of: dict[str, set[str]] = defaultdict(set)
    for it in bundled:
        langs_of[it.qid].add(it.lang)
    assert all(langs == set(LANGS) for langs in langs_of.values()), {
        q: langs for q, langs in langs_of.items() if langs != set(LANGS)
    }


def test_every_domain_in_every_language(bundled: list[KnowledgeItem]) -> None:
    per = Counter((it.domain, it.lang) for it in bundled)
    domains = {it.domain for it in bundled}
    assert {"general_science", "math", "china_culture", "china_history", "china_language"} <= domains
    for domain in domains:
        counts = {lang: per[(domain, lang)] for lang in LANGS}
        assert min(counts.values()) > 0 and len(set(counts.values())) == 1, (domain, counts)


def test_answer_positions_are_balanced(bundled: list[KnowledgeItem]) -> None:
    positions = Counter(it.answer for it in bundled)
    for index in range(4):
        assert positions[index] >= 0.10 * len(bundled), positions


def test_ids_follow_qid_and_lang(bundled: list[KnowledgeItem]) -> None:
    for it in bundled:
        assert it.id == f"{it.qid}-{it.lang}"
        assert it.qid.startswith(f"kn-{it.domain}-")
        assert it.source


def test_traditional_chinese_is_not_a_copy_of_simplified(bundled: list[KnowledgeItem]) -> None:
    by_qid: dict[str, dict[str, KnowledgeItem]] = defaultdict(dict)
    for it in bundled:
        by_qid[it.qid][it.lang] = it
    same = [q for q, t in by_qid.items() if t["zh-Hans"].question == t["zh-Hant"].question]
    assert len(same) <= 0.1 * len(by_qid), same


def test_numeric_choices_agree_across_translations(bundled: list[KnowledgeItem]) -> None:
    """Plain numbers are the same, in the same positions, in English and French."""
    by_qid: dict[str, dict[str, KnowledgeItem]] = defaultdict(dict)
    for it in bundled:
        by_qid[it.qid][it.lang] = it
    for qid, t in by_qid.items():
        en, fr = t["en"], t["fr"]
        for a, b in zip(en.choices, fr.choices, strict=True):
            if a.isdigit() or b.isdigit():
                assert a == b, (qid, en.choices, fr.choices)


@pytest.mark.parametrize(
    ("lines", "expect"),
    [
        ([json.dumps(GOOD), "{not json"], ":2: invalid JSON"),
        ([json.dumps({**GOOD, "choices": ["3", "4", "5"]})], ":1: choices"),
        ([json.dumps({**GOOD, "choices": ["3", "4", "4", "6"]})], ":1: choices"),
        ([json.dumps({**GOOD, "choices": ["3", " ", "5", "6"]})], ":1: choices"),
        ([json.dumps({**GOOD, "answer": 4})], ":1: answer"),
        ([json.dumps({**GOOD, "answer": True})], ":1: answer"),
        ([json.dumps({**GOOD, "lang": "de"})], ":1: lang"),
        ([json.dumps({**GOOD, "extra": 1})], ":1: extra"),
        ([json.dumps(GOOD), json.dumps(GOOD)], ":2: duplicate id"),
        ([json.dumps(GOOD), json.dumps({**GOOD_FR, "answer": 2})], ":2: qid 'q-01' has answer 2"),
        ([json.dumps(GOOD), json.dumps({**GOOD_FR, "domain": "x"})], ":2: qid 'q-01' has domain"),
        ([json.dumps(GOOD), json.dumps({**GOOD, "id": "q-01-en-bis"})], ":2: qid 'q-01' has two en items"),
        (["[1, 2]"], ":1: expected a JSON object"),
        ([], "no knowledge items"),
    ],
)
def test_each_failure_kind_is_reported_with_its_line(tmp_path: Path, lines: list[str], expect: str) -> None:
    _, problems = validate_knowledge_file(_write(tmp_path, lines))
    assert problems and expect in problems[0], problems


def test_bad_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps(GOOD).encode() + b"\n\xff\xfe bad\n")
    _, problems = validate_knowledge_file(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:2: not valid UTF-8")


def test_load_raises_first_problem_and_count(tmp_path: Path) -> None:
    path = _write(tmp_path, ["{bad", json.dumps({**GOOD, "answer": 9})])
    with pytest.raises(UnredactError, match=r":1: invalid JSON.*\(and 1 more problems\)"):
        load_knowledge(path)
    with pytest.raises(UnredactError, match="knowledge file not found"):
        load_knowledge(tmp_path / "missing.jsonl")


def test_a_good_custom_file_loads(tmp_path: Path) -> None:
    items = load_knowledge(str(_write(tmp_path, [json.dumps(GOOD), json.dumps(GOOD_FR)])))
    assert [it.lang for it in items] == ["en", "fr"]
    assert items[1].choices[items[1].answer] == "4"


def test_select_by_language(bundled: list[KnowledgeItem]) -> None:
    fr = select_knowledge(bundled, langs=["fr"])
    assert fr and {it.lang for it in fr} == {"fr"}
    assert len(fr) == len(bundled) // 4


@pytest.mark.parametrize("limit", [3, 7, 10, 30])
def test_per_lang_limit_covers_every_domain(bundled: list[KnowledgeItem], limit: int) -> None:
    domains = {it.domain for it in bundled}
    chosen = select_knowledge(bundled, per_lang_limit=limit)
    per_lang = Counter(it.lang for it in chosen)
    assert per_lang == dict.fromkeys(LANGS, limit)
    for lang in LANGS:
        covered = {it.domain for it in chosen if it.lang == lang}
        assert covered == domains if limit >= len(domains) else len(covered) == limit
    # the same questions in every language, in file order
    qids = [it.qid for it in chosen if it.lang == "en"]
    assert all([it.qid for it in chosen if it.lang == lang] == qids for lang in LANGS)
    kept = {it.id for it in chosen}
    assert [it.id for it in chosen] == [it.id for it in bundled if it.id in kept]


def test_per_lang_limit_with_languages_and_overflow(bundled: list[KnowledgeItem]) -> None:
    chosen = select_knowledge(bundled, langs=["en", "zh-Hans"], per_lang_limit=3)
    assert Counter(it.lang for it in chosen) == {"en": 3, "zh-Hans": 3}
    assert len({it.domain for it in chosen}) == 3
    assert len(select_knowledge(bundled, per_lang_limit=10_000)) == len(bundled)
    assert select_knowledge(bundled, per_lang_limit=0) == []
    with pytest.raises(UnredactError):
        select_knowledge(bundled, per_lang_limit=-1)


def test_hash_is_order_independent(bundled: list[KnowledgeItem]) -> None:
    assert knowledge_hash(bundled) == knowledge_hash(list(reversed(bundled)))
    assert knowledge_hash(bundled) != knowledge_hash(bundled[1:])
