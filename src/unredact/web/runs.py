"""Read run directories (the contract with the audit stages): safe paths, tolerant JSONL parsing."""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: the only files the app reads from a run directory (plus the one it writes, human_labels.jsonl)
RUN_FILES = frozenset(
    {"responses.jsonl", "verdicts.jsonl", "probes.jsonl", "report.json", "report.html", "human_labels.jsonl"}
)
#: the response taxonomy; a human picks one of these (keys 1-6 in the labelling view)
CLASSES: tuple[str, ...] = ("refusal", "deflection", "state_narrative", "candid", "fabrication", "error")
CLASS_HELP: dict[str, str] = {
    "refusal": "declines to answer",
    "deflection": "evasive, generic, changes the subject",
    "state_narrative": "official line as fact; documented facts omitted or denied",
    "candid": "substantive; acknowledges the documented facts",
    "fabrication": "invented facts or the wrong event",
    "error": "empty, broken or cut off: cannot be judged",
}


class RunNotFoundError(LookupError):
    """A run name that is invalid, escapes the runs directory or does not exist (always a 404)."""


def is_valid_run_name(name: str) -> bool:
    return RUN_NAME_RE.fullmatch(name) is not None


def run_path(runs_dir: Path, name: str) -> Path:
    """The resolved directory of run ``name``, refusing bad names and symlinks that leave ``runs_dir``."""
    if not is_valid_run_name(name):
        raise RunNotFoundError(name)
    root = runs_dir.resolve()
    path = (root / name).resolve()
    if path == root or not path.is_relative_to(root) or not path.is_dir():
        raise RunNotFoundError(name)
    return path


def run_file(runs_dir: Path, name: str, filename: str) -> Path:
    """The path of one known file of a run (which may not exist yet); never outside the run directory."""
    if filename not in RUN_FILES:
        raise RunNotFoundError(f"{name}/{filename}")
    base = run_path(runs_dir, name)
    path = (base / filename).resolve()
    if not path.is_relative_to(base):
        raise RunNotFoundError(f"{name}/{filename}")
    return path


@dataclass(frozen=True)
class Verdict:
    """The automatic judge's verdict on one answer."""

    label: str
    facts_covered: tuple[str, ...] = ()
    facts_total: int | None = None
    confidence: float | None = None
    judge: str = ""
    explanation: str = ""


@dataclass(frozen=True)
class Item:
    """One answer of a run (one probe, one sample) with its probe facts and automatic verdict."""

    key: str
    id: str
    sample: int
    topic: str
    lang: str
    kind: str
    prompt: str
    response: str
    system_prompt: str | None = None
    finish_reason: str = ""
    error: str | None = None
    facts: tuple[str, ...] = ()
    verdict: Verdict | None = None


@dataclass
class Run:
    """Everything the app shows about one run directory; missing files give empty parts and a note."""

    name: str
    path: Path
    items: dict[str, Item] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    has_report_html: bool = False
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        summary = self.report.get("summary")
        return summary if isinstance(summary, dict) else {}


def _str(record: dict[str, Any], name: str, default: str = "") -> str:
    value = record.get(name)
    return default if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


@functools.lru_cache(maxsize=128)
def _read_jsonl_cached(path: str, _mtime_ns: int, _size: int) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                record, problem = None, f"invalid JSON ({exc.msg})"
            else:
                problem = "not a JSON object with a string 'key' or 'id'"
            if isinstance(record, dict) and any(isinstance(record.get(k), str) for k in ("key", "id")):
                records.append(record)
            else:
                warnings.append(f"{Path(path).name} line {lineno}: skipped, {problem}")
    for warning in warnings:
        log.warning("%s", warning)
    return tuple(records), tuple(warnings)


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of a JSONL file and one warning per malformed line (a partial last line included)."""
    stat = path.stat()
    records, warnings = _read_jsonl_cached(str(path), stat.st_mtime_ns, stat.st_size)
    return list(records), list(warnings)


def _read_report(path: Path, warnings: list[str]) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.append(f"report.json: unreadable ({exc.__class__.__name__})")
        log.warning("%s: unreadable report.json: %s", path.parent.name, exc)
        return {}
    if not isinstance(report, dict):
        warnings.append("report.json: not a JSON object")
        return {}
    return report


def _verdict(record: dict[str, Any]) -> Verdict:
    total = record.get("facts_total")
    return Verdict(
        label=_str(record, "label", "unscored"),
        facts_covered=_names(record.get("facts_covered")),
        facts_total=total if isinstance(total, int) and not isinstance(total, bool) else None,
        confidence=_opt_float(record.get("confidence")),
        judge=_str(record, "judge"),
        explanation=_str(record, "explanation"),
    )


def _item(record: dict[str, Any], probes: dict[str, dict[str, Any]], verdict: Verdict | None) -> Item:
    key = _str(record, "key")
    probe_id = _str(record, "id") or key.partition("#")[0]
    probe = probes.get(probe_id, {})
    sample = record.get("sample")
    facts = probe.get("facts")
    fact_names = (
        tuple(str(f["name"]) for f in facts if isinstance(f, dict) and "name" in f) if isinstance(facts, list) else ()
    )
    return Item(
        key=key,
        id=probe_id,
        sample=sample if isinstance(sample, int) and not isinstance(sample, bool) else 0,
        topic=_str(record, "topic") or _str(probe, "topic"),
        lang=_str(record, "lang") or _str(probe, "lang"),
        kind=_str(record, "kind") or _str(probe, "kind"),
        prompt=_str(record, "prompt") or _str(probe, "prompt"),
        response=_str(record, "response"),
        system_prompt=record.get("system_prompt") if isinstance(record.get("system_prompt"), str) else None,
        finish_reason=_str(record, "finish_reason"),
        error=record.get("error") if isinstance(record.get("error"), str) else None,
        facts=fact_names,
        verdict=verdict,
    )


def load_run(runs_dir: Path, name: str) -> Run:
    """Read one run directory; tolerant of missing files and malformed lines (skipped with a warning)."""
    path = run_path(runs_dir, name)
    run = Run(name=name, path=path)

    def existing(filename: str) -> Path | None:
        file = run_file(runs_dir, name, filename)
        if file.is_file():
            return file
        run.missing.append(filename)
        return None

    probes: dict[str, dict[str, Any]] = {}
    if file := existing("probes.jsonl"):
        records, warnings = read_jsonl(file)
        run.warnings += warnings
        probes = {str(r["id"]): r for r in records if isinstance(r.get("id"), str)}
    verdicts: dict[str, Verdict] = {}
    if file := existing("verdicts.jsonl"):
        records, warnings = read_jsonl(file)
        run.warnings += warnings
        verdicts = {_str(r, "key"): _verdict(r) for r in records if isinstance(r.get("key"), str)}
    if file := existing("responses.jsonl"):
        records, warnings = read_jsonl(file)
        run.warnings += warnings
        for record in records:
            if not isinstance(record.get("key"), str):
                run.warnings.append("responses.jsonl: skipped a record without a 'key'")
                continue
            if run.model is None and isinstance(record.get("model"), str):
                run.model = record["model"]
            # a resumed run may repeat a key: the last line wins
            run.items[record["key"]] = _item(record, probes, verdicts.get(record["key"]))
    if file := existing("report.json"):
        run.report = _read_report(file, run.warnings)
        if isinstance(run.report.get("model"), str):
            run.model = run.report["model"]
    run.has_report_html = existing("report.html") is not None
    return run


def list_runs(runs_dir: Path) -> list[Run]:
    """Every valid run directory under ``runs_dir``, by name."""
    if not runs_dir.is_dir():
        return []
    runs = []
    for child in sorted(runs_dir.iterdir(), key=lambda p: p.name):
        if not is_valid_run_name(child.name):
            continue
        try:
            runs.append(load_run(runs_dir, child.name))
        except RunNotFoundError:  # a file, or a symlink leaving runs_dir
            continue
    return runs
