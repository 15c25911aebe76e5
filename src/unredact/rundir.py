"""The run directory: append-only JSONL records keyed by ``key``, atomic small files, resume checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from unredact.errors import RunDirError, UnredactError

RESPONSES = "responses.jsonl"
VERDICTS = "verdicts.jsonl"
CONFIG = "config.toml"
REPRODUCE = "reproduce.json"
PROBES = "probes.jsonl"
#: weight file of a PEFT adapter directory (removal's rank-1 adapter, fine-tuning's LoRA adapter)
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces ``out`` in one rename.

    ``out`` is never seen half-written. An existing non-empty ``out`` is an error unless ``overwrite``:
    it is then renamed aside, the new directory renamed in, and the old one deleted (put back if the
    second rename fails). On any error the temporary directory is removed and ``out`` is untouched.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise UnredactError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UnredactError(f"{out} is not empty; pass overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if out.is_dir():
            old = out.parent / f".{out.name}.old-{tag}"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old, out)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


LOCK = ".lock"


@contextmanager
def run_lock(path: Path) -> Iterator[Path]:
    """Hold an exclusive lock on run directory ``path`` (created if missing) while the block runs.

    Two processes writing the same run directory would generate every missing answer twice and
    interleave their records; the second one gets one clear error instead. The lock is an ``flock`` on
    ``path/.lock``, so the kernel releases it when the holder exits, however it dies: a killed run
    never leaves a stale lock behind. Where ``fcntl`` is missing (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise RunDirError(
                f"{path} is in use by another unredact process (pid {holder}); wait for it to finish or use "
                "another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 4 MiB chunks (model weights do not fit comfortably in memory twice)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def weight_hashes(model_dir: Path) -> dict[str, str]:
    """``{file name: sha256}`` of a model directory's safetensors files."""
    return {p.name: sha256_file(p) for p in sorted(Path(model_dir).glob("*.safetensors"))}


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def repair_jsonl(path: Path) -> int:
    """Cut a torn last line (a kill in the middle of a write); return the number of bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        f.seek(0)
        data = f.read()
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)
    return size - cut


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn or corrupt line is skipped (it will be regenerated)."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # torn last line
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(obj, dict):
                yield obj


def read_jsonl_strict(path: Path, check: Callable[[dict[str, Any]], str | None] | None = None) -> list[dict[str, Any]]:
    """Every record of a user-supplied JSONL file; the first bad line is one clear error with file:line."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as exc:
        raise UnredactError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UnredactError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnredactError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
        problem = "expected a JSON object" if not isinstance(row, dict) else (check(row) if check else None)
        if problem:
            raise UnredactError(f"{path}:{n}: {problem}")
        rows.append(row)
    return rows


def latest_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record for each key (later lines supersede earlier ones, e.g. a retried error)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        key = rec.get("key")
        if isinstance(key, str):
            out[key] = rec
    return out


class JsonlAppender:
    """Appends records one line per write, flushed at once, so a kill loses at most the line in flight."""

    def __init__(self, path: Path) -> None:
        self.path = path
        repair_jsonl(path)
        self._f = path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunDir:
    """One run's directory. Files are created only when the first record is written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def exists(self) -> bool:
        return self.file(CONFIG).is_file()

    def read_config(self) -> dict[str, Any]:
        import tomllib

        try:
            return tomllib.loads(self.file(CONFIG).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{self.file(CONFIG)} is unreadable ({exc})") from exc

    def check_resumable(self, identity: dict[str, Any]) -> None:
        """A run directory is resumed only by the same run: identity fields must match."""
        if not self.exists:
            if self.path.exists() and any(self.path.iterdir()):
                leftovers = sorted(p.name for p in self.path.iterdir())[:3]
                if RESPONSES in leftovers or VERDICTS in leftovers:
                    raise RunDirError(f"{self.path} has records but no {CONFIG}; use a new --out")
            return
        old = self.read_config().get("identity", {})
        diffs = [k for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
        if diffs:
            raise RunDirError(
                f"{self.path} holds a different run ({', '.join(diffs)} differ); use another --out or delete it"
            )

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.file(CONFIG), tomli_w.dumps(_toml_safe(config)))

    def records(self, name: str = RESPONSES) -> dict[str, dict[str, Any]]:
        return latest_by_key(read_jsonl(self.file(name)))


def _toml_safe(obj: Any) -> Any:
    """TOML has no null: drop None values recursively."""
    if isinstance(obj, dict):
        return {k: _toml_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [_toml_safe(v) for v in obj if v is not None]
    return obj
