"""Probe validation: every failure kind is reported with file:line; the bundled set meets its counts."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from unredact.probes.loader import default_probe_path, load_probes, select_probes, validate_file

GOOD = {
    "id": "a-01-en",
    "pair_id": "a-01",
    "topic": "t",
    "lang": "en",
    "kind": "harmless",
    "split": "train",
    "prompt": "Hello?",
}


def _write(tmp_path: Path, lines: list[str] | bytes) -> Path:
    path = tmp_path / "p.jsonl"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("lines", "expect"),
    [
        ([json.dumps(GOOD), "{not json"], ":2: invalid JSON"),
        ([json.dumps({**GOOD, "lang": "de"})], ":1: lang"),
        ([json.dumps({k: v for k, v in GOOD.items() if k != "prompt"})], ":1: prompt"),
        ([json.dumps(GOOD), json.dumps(GOOD)], ":2: duplicate id"),
        ([json.dumps({**GOOD, "kind": "sensitive"})], ":1: "),  # sensitive needs facts
        (
            [json.dumps(GOOD), json.dumps({**GOOD, "id": "a-01-fr", "lang": "fr", "split": "test"})],
            ":2: pair 'a-01' has split",
        ),
        ([json.dumps({**GOOD, "extra": 1})], ":1: extra"),
        (["[1, 2]"], ":1: expected a JSON object"),
        ([], "no probes"),
    ],
)
def test_each_failure_kind_is_reported_with_its_line(tmp_path: Path, lines: list[str], expect: str) -> None:
    _, problems = validate_file(_write(tmp_path, lines))
    assert problems and expect in problems[0], problems


def test_non_utf8_file(tmp_path: Path) -> None:
    _, problems = validate_file(_write(tmp_path, b'{"id": "x"}\n\xff\xfe bad\n'))
    assert problems == [f"{tmp_path / 'p.jsonl'}:2: not valid UTF-8 (byte 12)"]


def test_bundled_probe_set_meets_the_counts() -> None:
    probes = load_probes("default")
    _, problems = validate_file(default_probe_path())
    assert problems == []
    by_kind = Counter(p.kind for p in probes)
    sensitive = [p for p in probes if p.kind == "sensitive"]
    topics = defaultdict(set)
    for p in sensitive:
        topics[p.topic].add(p.pair_id)
    assert len(topics) >= 18 and all(len(q) >= 12 for q in topics.values())
    langs_per_pair = defaultdict(set)
    for p in sensitive:
        langs_per_pair[p.pair_id].add(p.lang)
    assert all(v == {"en", "zh-Hans", "zh-Hant", "fr"} for v in langs_per_pair.values())
    assert by_kind["control-sensitive"] >= 60 and by_kind["neutral"] >= 80
    assert by_kind["harmful"] >= 40 and by_kind["harmless"] >= 120
    assert all(2 <= len(p.facts) <= 5 for p in probes if p.kind in ("sensitive", "neutral"))


def test_quick_profile_is_balanced_and_keeps_translations_together() -> None:
    quick = select_probes(load_probes("default"), profile="quick")
    pairs = defaultdict(set)
    for p in quick:
        pairs[p.pair_id].add(p.lang)
    assert all(len(v) == 4 for v in pairs.values())
    sens_topics = Counter(p.topic for p in quick if p.kind == "sensitive")
    assert len(sens_topics) >= 18 and set(sens_topics.values()) == {8}
    assert 150 <= len(quick) <= 260
