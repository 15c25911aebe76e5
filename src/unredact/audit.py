"""The audit stage: probes x samples -> backend -> responses.jsonl (resumable), then judge and report."""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unredact import __version__
from unredact.backends.base import Backend, GenerationRequest, GenerationResult
from unredact.backends.registry import BackendOptions, load_backend
from unredact.probes.loader import load_probes, probes_hash, resolve_probe_path, select_probes, write_probe_file
from unredact.probes.schema import Probe
from unredact.rundir import (
    PROBES,
    REPRODUCE,
    RESPONSES,
    JsonlAppender,
    RunDir,
    atomic_write_json,
    run_lock,
    sha256_file,
)
from unredact.settings import AuditSettings
from unredact.ui import console, generation_progress


def request_seed(seed: int, key: str) -> int:
    """A per-answer seed derived from the run seed and the answer's key (independent of batching)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def build_requests(probes: Sequence[Probe], s: AuditSettings) -> list[tuple[Probe, int, GenerationRequest]]:
    out = []
    for probe in probes:
        messages: list[dict[str, str]] = []
        if s.system_prompt:
            messages.append({"role": "system", "content": s.system_prompt})
        messages.append({"role": "user", "content": probe.prompt})
        for sample in range(s.samples):
            key = f"{probe.id}#{sample}"
            req = GenerationRequest(
                key=key,
                messages=tuple(messages),
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=request_seed(s.seed, key),
                stop=tuple(s.stop),
            )
            out.append((probe, sample, req))
    return out


def response_record(probe: Probe, sample: int, result: GenerationResult, s: AuditSettings) -> dict[str, Any]:
    return {
        "key": result.key,
        "id": probe.id,
        "sample": sample,
        "pair_id": probe.pair_id,
        "topic": probe.topic,
        "lang": probe.lang,
        "kind": probe.kind,
        "split": probe.split,
        "prompt": probe.prompt,
        "system_prompt": s.system_prompt,
        "response": result.text,
        "finish_reason": result.finish_reason,
        "n_tokens": result.n_tokens,
        "latency_s": round(result.latency_s, 3),
        "error": result.error,
        "model": s.model,
        **({"meta": result.meta} if result.meta else {}),
    }


def backend_options(s: AuditSettings) -> BackendOptions:
    return BackendOptions(
        dtype=s.dtype,
        device=s.device,
        batch_size=s.batch_size,
        trust_remote_code=s.trust_remote_code,
        allow_pickle=s.allow_pickle,
        timeout_s=s.timeout_s,
        concurrency=s.concurrency,
    )


@dataclass
class AuditOutcome:
    run: RunDir
    generated: int
    skipped: int
    errors: int
    seconds: float


def reproduce_record(s: AuditSettings, backend: Backend, phash: str, n_probes: int) -> dict[str, Any]:
    probe_path = resolve_probe_path(s.probes)
    return {
        "unredact": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": ["unredact", *sys.argv[1:]],
        "settings": s.model_dump(),
        "probes": {"file": s.probes, "sha256": sha256_file(probe_path), "selection_hash": phash, "count": n_probes},
        "backend": backend.describe(),
        "seed": s.seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_generation(
    s: AuditSettings, out: Path, backend: Backend | None = None, description: str = "audit"
) -> AuditOutcome:
    """Generate every missing answer of the run; safe to kill and re-run (resumes, no duplicates)."""
    started = time.perf_counter()
    probes = select_probes(
        load_probes(s.probes),
        langs=s.langs,
        topics=s.topics,
        kinds=s.kinds,
        splits=s.splits,
        profile=s.profile,
        limit=s.limit,
    )
    if not probes:
        from unredact.errors import UnredactError

        raise UnredactError("no probes left after filtering (check --langs/--topics/--kinds/--splits)")
    phash = probes_hash(probes)
    run = RunDir(out)
    run.check_resumable(s.identity(phash))
    existing = run.records(RESPONSES)
    done = {k for k, r in existing.items() if not (s.retry_errors and r.get("finish_reason") == "error")}
    todo = [(p, i, r) for p, i, r in build_requests(probes, s) if r.key not in done]
    total = len(probes) * s.samples
    if not todo:
        console.print(f"[green]all {total} answers already in {out / RESPONSES}[/]")
        return AuditOutcome(run, 0, total, 0, time.perf_counter() - started)
    with ExitStack() as held:
        locked = run.path.is_dir()  # one writer per run directory; a new one is locked at its first write
        if locked:
            held.enter_context(run_lock(run.path))
        backend = backend or load_backend(s.model, backend_options(s))
        by_key = {r.key: (p, i) for p, i, r in todo}
        errors = generated = 0
        appender: JsonlAppender | None = None
        with generation_progress(total, description, already_done=total - len(todo)) as progress:
            for result in backend.generate([r for _, _, r in todo], progress):
                if appender is None:  # first answer: only now does the run directory get written
                    if not locked:  # even if another process created the directory meanwhile
                        held.enter_context(run_lock(run.path))
                    _write_run_header(run, s, backend, probes, phash)
                    appender = held.enter_context(JsonlAppender(run.file(RESPONSES)))
                probe, sample = by_key[result.key]
                appender.append(response_record(probe, sample, result, s))
                generated += 1
                errors += result.finish_reason == "error"
    return AuditOutcome(run, generated, total - len(todo), errors, time.perf_counter() - started)


def _write_run_header(run: RunDir, s: AuditSettings, backend: Backend, probes: Sequence[Probe], phash: str) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    if not run.exists:
        run.write_config({"identity": s.identity(phash), "audit": s.model_dump(exclude_none=True)})
        write_probe_file(run.file(PROBES), probes)
    atomic_write_json(run.file(REPRODUCE), reproduce_record(s, backend, phash, len(probes)))
