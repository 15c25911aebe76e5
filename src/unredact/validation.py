"""Shared parsing of user files: JSONL of pydantic records (problems as file:line) and TOML settings tables."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from unredact.errors import UnredactError

M = TypeVar("M", bound=BaseModel)


def format_validation(exc: ValidationError) -> str:
    """All problems of one record on one line: ``field: message; field: message``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "item"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_jsonl_records(path: Path, model: type[M]) -> tuple[list[M], dict[str, int], list[str]]:
    """Validate every line of ``path`` as ``model`` (which has an ``id``).

    Returns the valid records (first of each id), the line of each id, and ``file:line: problem``
    messages for unreadable files, bad UTF-8, invalid JSON, non-objects, schema errors and duplicate ids.
    """
    problems: list[str] = []
    records: list[M] = []
    lines_of: dict[str, int] = {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], {}, [f"{path}: cannot read ({exc.strerror or exc})"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], {}, [f"{path}:{line}: not valid UTF-8 (byte {exc.start})"]
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            continue
        try:
            record = model.model_validate(obj)
        except ValidationError as exc:
            problems.append(f"{path}:{lineno}: {format_validation(exc)}")
            continue
        rid = str(record.id)
        if rid in lines_of:
            problems.append(f"{path}:{lineno}: duplicate id {rid!r} (first on line {lines_of[rid]})")
            continue
        lines_of[rid] = lineno
        records.append(record)
    return records, lines_of, problems


def read_toml_table(path: Path | None, table: str) -> dict[str, Any]:
    """The ``[table]`` of a TOML settings file (the whole file if it has no such table); {} for no file."""
    if path is None:
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UnredactError(f"cannot read config {path}: {exc}") from exc
    section = doc.get(table, doc)
    return dict(section) if isinstance(section, dict) else {}


def validate_settings(model: type[M], data: dict[str, Any], what: str = "setting") -> M:
    """``model`` from ``data``, or one line naming the first invalid field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        # a check across fields (model validator) has no location: its message names the options
        raise UnredactError(f"invalid {what} {loc}: {msg}" if loc else msg) from exc
