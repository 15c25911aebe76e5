"""``unredact verify``: run every check on an (original, modified) pair and write the verdict.

Run directory::

    out/
      config.toml           settings and the identity a resumed run must share
      probes.jsonl          the probes both models answer (see probeset.py)
      original/, modified/  an audit run each (responses, verdicts, report) - resumable
      knowledge/SIDE.jsonl  multiple-choice scores per item
      lmeval/SIDE.json      lm-eval task results (when tasks are requested)
      drift.jsonl           KL per harmless prompt
      verify.json           every check with its numbers and the pass/fail verdict
      report.html           the verification section (links to both audit reports)
      reproduce.json        versions, seeds, settings, hashes of probes, items and weights

One model is in memory at a time: the original is loaded, answers, is scored and leaves its drift
log-probs in memory; then the modified model. A killed run resumes: finished files are kept, the
answers resume record by record.
"""

from __future__ import annotations

import gc
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unredact import __version__
from unredact.audit import backend_options, run_generation
from unredact.backends.base import Backend
from unredact.backends.registry import LOCAL_KINDS, check_spec, load_backend, parse_spec
from unredact.errors import UnredactError
from unredact.probes.loader import load_probes, probes_hash, write_probe_file
from unredact.report.build import judge_run, write_report
from unredact.rundir import PROBES, RunDir, atomic_write_json, atomic_write_text, read_jsonl, weight_hashes
from unredact.settings import AuditSettings
from unredact.ui import console, step_progress
from unredact.verify import checks as C
from unredact.verify.drift import DriftBase, drift_base, drift_rows
from unredact.verify.items import load_knowledge, select_knowledge
from unredact.verify.knowledge import score_knowledge
from unredact.verify.probeset import KNOWLEDGE_PER_LANG, drift_probes, generation_probes
from unredact.verify.settings import VerifySettings

VERIFY = "verify.json"
DRIFT = "drift.jsonl"
SCHEMA = "unredact.verify/1"
LOCAL_ONLY = "needs local models on both sides (hf/, gguf/, demo/): log-likelihoods are not available remotely"


@dataclass
class VerifyOutcome:
    path: Path
    passed: bool
    checks: list[C.Check]
    seconds: float


class _Plan:
    """What the run needs: probes, items, and which files are still missing."""

    def __init__(self, s: VerifySettings, out: Path) -> None:
        probes = load_probes(s.probes)
        self.generation = generation_probes(probes, s.profile, s.langs)
        self.drift = drift_probes(probes, s.profile, s.langs)
        self.items = select_knowledge(
            load_knowledge(s.knowledge), langs=s.langs or None, per_lang_limit=KNOWLEDGE_PER_LANG[s.profile]
        )
        if not self.generation:
            raise UnredactError("no probes selected for verification (check --langs and the probe file)")
        self.out = out
        self.probes_file = out / PROBES
        self.probes_hash = probes_hash([*self.generation, *self.drift])
        from unredact.verify.items import knowledge_hash

        self.knowledge_hash = knowledge_hash(self.items)

    def knowledge_file(self, side: str) -> Path:
        return self.out / "knowledge" / f"{side}.jsonl"

    def lmeval_file(self, side: str) -> Path:
        return self.out / "lmeval" / f"{side}.json"

    def knowledge_done(self, side: str) -> bool:
        have = {r.get("id") for r in read_jsonl(self.knowledge_file(side))}
        return bool(self.items) and all(i.id in have for i in self.items)

    def generation_done(self, side: str) -> bool:
        done = RunDir(self.out / side).records()
        return all(f"{p.id}#0" in done and done[f"{p.id}#0"].get("finish_reason") != "error" for p in self.generation)


def audit_settings(s: VerifySettings, spec: str, probes_file: Path) -> AuditSettings:
    return AuditSettings(
        model=spec,
        probes=str(probes_file),
        profile="full",
        system_prompt=s.system_prompt,
        seed=s.seed,
        max_new_tokens=s.max_new_tokens,
        batch_size=s.batch_size,
        dtype=s.dtype,
        device=s.device,
        concurrency=s.concurrency,
        timeout_s=s.timeout_s,
        trust_remote_code=s.trust_remote_code,
        allow_pickle=s.allow_pickle,
        judge=s.judge,
    )


def _identity(s: VerifySettings, plan: _Plan) -> dict[str, Any]:
    return {
        "original": s.original,
        "modified": s.modified,
        "profile": s.profile,
        "probes_hash": plan.probes_hash,
        "knowledge_hash": plan.knowledge_hash,
        "system_prompt": s.system_prompt or "",
        "max_new_tokens": s.max_new_tokens,
        "kl_tokens": s.kl_tokens,
        "seed": s.seed,
    }


def run_verify(s: VerifySettings, out: Path) -> VerifyOutcome:
    """Compute (or resume) every check and write verify.json, report.html and reproduce.json."""
    started = time.perf_counter()
    for spec in (s.original, s.modified):
        check_spec(spec)  # a typo fails here, before the run directory is written
    plan = _Plan(s, out)
    run = RunDir(out)
    run.check_resumable(_identity(s, plan))
    described: dict[str, Any] = {}
    local = {side: _is_local(spec) for side, spec in zip(C.SIDES, (s.original, s.modified), strict=True)}
    both_local = all(local.values())
    base: DriftBase | None = None
    for side, spec in zip(C.SIDES, (s.original, s.modified), strict=True):
        need_drift = both_local and not (out / DRIFT).exists() and (side == "original" or base is not None)
        need_kn = both_local and not plan.knowledge_done(side)
        need_lm = both_local and bool(s.lmeval_tasks) and not plan.lmeval_file(side).exists()
        need_gen = not plan.generation_done(side)
        if not (need_drift or need_kn or need_lm or need_gen):
            console.print(f"[green]{side}: everything already computed[/] in {out}")
            continue
        console.rule(f"[bold]{side}[/]: {spec}")
        backend = load_backend(spec, backend_options(audit_settings(s, spec, plan.probes_file)))
        preflight = getattr(backend, "preflight", None)
        if callable(preflight):
            preflight()
        _write_header(s, plan, run)  # only once a model answered the call: a bad spec or server leaves nothing
        try:
            resolved = getattr(backend, "resolved", None)
            described[side] = {**backend.describe(), "path": getattr(resolved, "path", None)}
            if need_kn:
                _knowledge(backend, plan, side, s)
            if need_lm:
                _lmeval(backend, plan, side, s)
            if need_drift:
                base = _drift(backend, plan, side, s, base)
            if need_gen:
                run_generation(audit_settings(s, spec, plan.probes_file), out / side, backend, f"{side} answers")
        finally:
            close = getattr(backend, "close", None)
            if callable(close):
                close()
            del backend
            gc.collect()
    return _conclude(s, plan, described, both_local, started)


def _write_header(s: VerifySettings, plan: _Plan, run: RunDir) -> None:
    if not run.exists:
        plan.out.mkdir(parents=True, exist_ok=True)
        run.write_config({"identity": _identity(s, plan), "verify": s.model_dump(exclude_none=True)})
        write_probe_file(plan.probes_file, plan.generation)


def _is_local(spec: str) -> bool:
    return parse_spec(spec)[0] in LOCAL_KINDS


def _knowledge(backend: Backend, plan: _Plan, side: str, s: VerifySettings) -> None:
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    with step_progress(4 * len(plan.items), f"{side} knowledge (options)") as advance:
        records = score_knowledge(model, tokenizer, plan.items, batch_size=max(4, s.batch_size), progress=advance)
    atomic_write_text(plan.knowledge_file(side), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _lmeval(backend: Backend, plan: _Plan, side: str, s: VerifySettings) -> None:
    from unredact.verify.lmeval import run_lmeval_tasks

    include = Path(s.lmeval_include) if s.lmeval_include else None
    console.print(f"{side}: lm-eval tasks {', '.join(s.lmeval_tasks)}")
    results = run_lmeval_tasks(
        backend.model,  # type: ignore[attr-defined]
        backend.tokenizer,  # type: ignore[attr-defined]
        s.lmeval_tasks,
        include_path=include,
        limit=s.lmeval_limit,
        batch_size=max(4, s.batch_size),
        seed=s.seed,
    )
    atomic_write_json(plan.lmeval_file(side), results)


def _drift(backend: Backend, plan: _Plan, side: str, s: VerifySettings, base: DriftBase | None) -> DriftBase | None:
    hf: Any = backend
    if side == "original":
        console.print(f"original: greedy answer openings of {len(plan.drift)} harmless prompts ({s.kl_tokens} tokens)")
        return drift_base(hf, plan.drift, k=s.kl_tokens, system_prompt=s.system_prompt, batch_size=s.batch_size)
    assert base is not None
    console.print(f"modified: KL over {len(plan.drift)} harmless prompts")
    rows = drift_rows(base, hf.model)
    atomic_write_text(plan.out / DRIFT, "".join(json.dumps(r) + "\n" for r in rows))
    return None


def _side_rows(plan: _Plan, side: str, judge: str) -> list[dict[str, Any]]:
    run = RunDir(plan.out / side)
    rows = judge_run(run, judge)
    write_report(run, rows)
    return rows


def gold_reference(langs: set[str]) -> dict[str, Any] | None:
    """Unsupported-numbers rate of the bundled sourced gold answers to sensitive questions in ``langs``:
    what correct, detailed answers score on that signal (the over-correction check's reference)."""
    from unredact.finetune.gold import load_gold

    gold = load_gold("default", load_probes("default"))
    return C.unsupported_reference(
        [
            (g.response, g.probe.prompt, [form for fact in g.probe.facts for form in fact.forms])
            for g in gold
            if g.probe.kind == "sensitive" and g.probe.lang in langs
        ]
    )


def _conclude(
    s: VerifySettings, plan: _Plan, described: dict[str, Any], both_local: bool, started: float
) -> VerifyOutcome:
    from unredact.verify.html import render_verify

    probes = {p.id: p.model_dump() for p in plan.generation}
    rows = {side: C.annotate(_side_rows(plan, side, s.judge), probes) for side in C.SIDES}
    knowledge = {side: list(read_jsonl(plan.knowledge_file(side))) for side in C.SIDES}
    lmeval = {
        side: json.loads(plan.lmeval_file(side).read_text()) for side in C.SIDES if plan.lmeval_file(side).exists()
    }
    t = s.thresholds
    results = [
        C.check_drift(list(read_jsonl(plan.out / DRIFT)), t, "" if both_local else LOCAL_ONLY),
        C.check_knowledge(
            knowledge["original"], knowledge["modified"], t, lmeval or None, "" if both_local else LOCAL_ONLY
        ),
        C.check_cultural(rows, t),
        C.check_safety(rows, t),
        C.check_overcorrection(rows, t, gold_reference({p.lang for p in plan.generation if p.kind == "sensitive"})),
        C.check_fluency(rows, t),
    ]
    passed = all(c.status != C.FAIL for c in results)
    doc = {
        "schema": SCHEMA,
        "original": s.original,
        "modified": s.modified,
        "profile": s.profile,
        "passed": passed,
        "checks": [c.to_dict() for c in results],
        "thresholds": t.model_dump(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "unredact": __version__,
    }
    atomic_write_json(plan.out / VERIFY, doc)
    atomic_write_text(plan.out / "report.html", render_verify(doc))
    _write_reproduce(s, plan, described)
    return VerifyOutcome(plan.out, passed, results, time.perf_counter() - started)


def _write_reproduce(s: VerifySettings, plan: _Plan, described: dict[str, Any]) -> None:
    path = plan.out / "reproduce.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    models = dict(old.get("models", {}))
    for side, d in described.items():
        model_dir = d.get("path")
        hashes = weight_hashes(Path(model_dir)) if model_dir and Path(model_dir).is_dir() else {}
        models[side] = {**d, "weights_sha256": hashes}
    atomic_write_json(
        path,
        {
            "unredact": __version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "command": ["unredact", *sys.argv[1:]],
            "settings": s.model_dump(),
            "seed": s.seed,
            "probes": {"selection_hash": plan.probes_hash, "answered": len(plan.generation), "drift": len(plan.drift)},
            "knowledge": {"file": s.knowledge, "hash": plan.knowledge_hash, "items": len(plan.items)},
            "models": models,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
