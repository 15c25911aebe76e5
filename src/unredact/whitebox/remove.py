"""The `unredact remove` flow: baseline audits -> directions -> search -> confirm on dev -> test audit
-> export -> model card. Every stage writes into the run directory and is skipped or resumed when
its output is already there; the model is loaded once and edited in place (reset between trials)."""

from __future__ import annotations

import json
import platform
import resource
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from unredact import __version__
from unredact.errors import UnredactError
from unredact.probes.loader import select_balanced
from unredact.rundir import atomic_write_json, atomic_write_text, run_lock, sha256_file, weight_hashes
from unredact.ui import console
from unredact.validation import validate_settings
from unredact.whitebox.card import model_card, pct, public_settings, public_spec

if TYPE_CHECKING:
    import optuna

    from unredact.backends.base import GenerationRequest, GenerationResult, ProgressCallback
    from unredact.backends.hf import HFBackend
    from unredact.probes.schema import Probe
    from unredact.whitebox.ablation import AblationDeltas
    from unredact.whitebox.directions import DirectionSet
    from unredact.whitebox.search import AblationParams

SETTINGS_FILE = "remove.json"
EVAL_PROBES = "eval_probes.jsonl"
DIRECTIONS = "directions.safetensors"
SEARCH_PROMPTS = "search_prompts.json"
PROXY_VALIDATION = "proxy_validation.json"
SELECTION = "selection.json"
EXPORT_CHECK = "export.json"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
KINDS_DEV = ["sensitive", "harmful"]
KINDS_TEST = ["sensitive", "control-sensitive", "neutral", "harmful", "harmless"]


class LocalRunSettings(BaseModel):
    """Settings shared by the runs that change a local model (remove, finetune); descriptions are CLI help."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("demo/qwen2.5-coder-0.5b", description="local model spec: demo/NAME, hf/DIR or gguf/FILE")
    probes: str = Field("default", description="probe JSONL file, or 'default' for the bundled set")
    seed: int = Field(0, description="seed of the run (search, adapter init, batch order)")
    dtype: str = Field("auto", description="auto (bfloat16), float32, bfloat16, float16")
    device: str = Field("auto", description="auto, cpu, cuda ...")
    batch_size: int = Field(8, ge=1, le=1024, description="prompts per generation batch")
    system_prompt: str | None = Field(None, description="system prompt everywhere; none: the model's default")
    eval_sensitive: int = Field(48, ge=1, description="sensitive prompts per evaluation audit")
    eval_harmful: int = Field(12, ge=1, description="harmful prompts per evaluation audit")
    eval_other: int = Field(8, ge=0, description="control, neutral and harmless prompts each in the test audits")
    max_new_tokens: int = Field(128, ge=1, le=4096, description="answer length in the test audits")
    judge: str = Field("auto", description="judge: auto (rules + learned), lexical, or llm:SPEC")
    verify: Literal["none", "smoke", "quick", "full"] = Field(
        "quick", description="verification of the exported model against the original (profile, or none)"
    )
    arch: str | None = Field(
        None,
        description="module paths for a model outside the architecture table (or to override it): "
        "layers=model.layers,attn_out=self_attn.o_proj,mlp_out=mlp.down_proj[,norm=...,embed=...]",
    )

    #: settings a resumed run may change
    resumable_changes: ClassVar[frozenset[str]] = frozenset({"batch_size", "device", "verify"})

    @field_validator("arch")
    @classmethod
    def _arch_parses(cls, value: str | None) -> str | None:
        from unredact.whitebox.arch import parse_arch_override

        if value is None or not value.strip():
            return None
        try:
            parse_arch_override(value)
        except UnredactError as err:
            raise ValueError(str(err)) from err
        return value.strip()

    def identity(self) -> dict[str, Any]:
        """Fields a resumed run must share with the run on disk."""
        return {k: v for k, v in self.model_dump().items() if k not in self.resumable_changes}


class RemoveSettings(LocalRunSettings):
    """Everything that defines a removal run; field descriptions are the CLI help."""

    trials: int = Field(24, ge=1, le=100_000, description="completed search trials wanted (over all sessions)")
    budget_minutes: float | None = Field(
        30.0, gt=0, description="search time budget: no new trial starts after this many minutes"
    )
    forward_batch_size: int = Field(16, ge=1, le=1024, description="prompts per scoring forward pass")
    confirm_max_new_tokens: int = Field(64, ge=1, le=4096, description="answer length in the dev audits")
    search_sensitive: int = Field(32, ge=1, description="train sensitive prompts scored per trial")
    search_harmful: int = Field(24, ge=1, description="train harmful prompts scored per trial")
    kl_prompts: int = Field(12, ge=1, description="train harmless prompts per KL language")
    kl_langs: list[str] = Field(default_factory=lambda: ["en", "zh-Hans", "fr"], description="KL languages")
    kl_tokens: int = Field(4, ge=1, le=64, description="answer tokens in the KL objective")
    proxy_depth: int = Field(3, ge=1, le=6, description="tokens of refusal openings the proxy looks at")
    candidates: int = Field(3, ge=1, le=20, description="Pareto candidates confirmed by generation on dev")
    kl_max: float = Field(0.1, gt=0, description="KL target for the chosen edit")
    harmful_keep: float = Field(0.9, ge=0, le=1, description="keep this share of the original harmful refusal rate")
    audit_run: str | None = Field(
        None, description="audit run with train-split verdicts: search only on sensitive prompts it judged censored"
    )
    response_tokens: int = Field(
        0, ge=0, le=16, description="directions: also average the first N greedy answer tokens (0: last prompt token)"
    )
    direction_prompts: int = Field(
        0, ge=0, description="directions: at most N train prompts per group, balanced over topics (0: all)"
    )
    adapter: bool = Field(
        False, description="also write the chosen edit as a PEFT LoRA adapter (rank 1 per edited weight) in OUT/adapter"
    )

    def identity(self) -> dict[str, Any]:
        """Fields a resumed run must share with the run on disk (trials, budget, selection may change)."""
        keep = [
            "model",
            "probes",
            "seed",
            "dtype",
            "system_prompt",
            "eval_sensitive",
            "eval_harmful",
            "eval_other",
            "max_new_tokens",
            "confirm_max_new_tokens",
            "search_sensitive",
            "search_harmful",
            "kl_prompts",
            "kl_langs",
            "kl_tokens",
            "proxy_depth",
            "judge",
            "audit_run",
            "arch",
            "response_tokens",
            "direction_prompts",
        ]
        return {k: getattr(self, k) for k in keep}


@dataclass
class RemoveResult:
    """What a removal run produced (also written to reproduce.json)."""

    out_dir: Path
    chosen_trial: int
    params: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    kl: dict[str, float]
    targets_met: bool
    notes: list[str]
    reload_max_abs_diff: float
    model_dir: Path
    model_card: Path
    seconds: float
    peak_rss_mb: float
    timings: dict[str, float] = field(default_factory=dict)
    verify_passed: bool | None = None


# ---- probe selection ----------------------------------------------------------------------------


def eval_probes(probes: Sequence[Probe], s: LocalRunSettings) -> list[Probe]:
    """The dev and test probes every audit of this run draws from."""
    out: list[Probe] = []
    for split in ("dev", "test"):
        out += select_balanced(probes, kind="sensitive", split=split, n=s.eval_sensitive)
        out += select_balanced(probes, kind="harmful", split=split, n=s.eval_harmful)
        if split == "test" and s.eval_other:
            for kind in ("control-sensitive", "neutral", "harmless"):
                out += select_balanced(probes, kind=kind, split=split, n=s.eval_other)
    return out


# ---- audits with the loaded (possibly edited) model --------------------------------------------------


class _LoadedBackend:
    """The loaded model as an audit backend, with the applied edit recorded in ``describe``."""

    def __init__(self, backend: HFBackend, spec: str, edit: dict[str, Any] | None) -> None:
        self.inner, self.spec, self.edit = backend, spec, edit

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[GenerationResult]:
        return self.inner.generate(requests, progress)

    def describe(self) -> dict[str, Any]:
        info = {k: v for k, v in self.inner.describe().items() if k != "origin"}  # no local paths
        return {**info, "spec": self.spec, "edit": self.edit}

    def close(self) -> None:  # the model stays loaded for the next stage
        pass


def run_audit(
    backend: HFBackend,
    s: LocalRunSettings,
    out: Path,
    probe_file: Path,
    *,
    split: str,
    kinds: list[str],
    max_new_tokens: int,
    label: str,
    edit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate (resumably) and judge one audit of the loaded model; return its report.json.

    Judging is cheap and always redone, so every audit of a run (also one resumed after the judge
    changed) is judged by the same judge version and before/after comparisons stay fair.
    """
    from unredact.audit import run_generation
    from unredact.report.build import judge_and_report
    from unredact.settings import AuditSettings

    settings = AuditSettings(
        model=label,
        probes=str(probe_file),
        profile="full",
        kinds=kinds,
        splits=[split],
        system_prompt=s.system_prompt,
        max_new_tokens=max_new_tokens,
        batch_size=s.batch_size,
        dtype=s.dtype,
        device=s.device,
        judge=s.judge,
    )
    run_generation(settings, out, _LoadedBackend(backend, label, edit), description=out.name)  # type: ignore[arg-type]
    judge_and_report(out, s.judge)
    data: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return data


def _rate(report: dict[str, Any], key: str) -> float:
    return float(report["summary"][key]["rate"])


# ---- stages -------------------------------------------------------------------------------------


class Stages:
    """Timing and headers for the stages of one run."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._t = self.started
        self._name: str | None = None

    def start(self, name: str, title: str) -> None:
        self.stop()
        self._name, self._t = name, time.perf_counter()
        console.rule(f"[bold]{title}")

    def stop(self) -> None:
        if self._name:
            self.timings[self._name] = round(time.perf_counter() - self._t, 1)
        self._name = None


def check_run_settings(out: Path, s: LocalRunSettings, name: str = SETTINGS_FILE) -> None:
    """Record the run's settings in OUT/NAME; a resumed run must have the same identity fields (a field
    that the recorded run predates counts as its default)."""
    path = out / name
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8")).get("identity", {})
        defaults = {k: f.default for k, f in type(s).model_fields.items()}
        now = s.identity()
        diffs = sorted(k for k in set(old) | set(now) if old.get(k, defaults.get(k)) != now.get(k))
        if diffs:
            raise UnredactError(f"{out} holds another run ({', '.join(diffs)} differ); use another --out")
    atomic_write_json(path, {"identity": s.identity(), "settings": s.model_dump()})


def check_local(spec: str) -> None:
    from unredact.backends.registry import LOCAL_KINDS, parse_spec

    if parse_spec(spec)[0] not in LOCAL_KINDS:
        raise UnredactError(f"{spec}: removal needs local weights (demo/, hf/, gguf/)")


def load_local_backend(s: LocalRunSettings) -> HFBackend:
    from unredact.backends.registry import BackendOptions, load_backend

    check_local(s.model)
    options = BackendOptions(dtype=s.dtype, device=s.device, batch_size=s.batch_size)
    backend = load_backend(s.model, options)
    if not getattr(backend, "white_box", False):
        raise UnredactError(f"{s.model}: this backend gives no access to weights")
    return backend  # type: ignore[return-value]


def directions_stage(backend: HFBackend, s: RemoveSettings, out: Path) -> DirectionSet:
    from unredact.whitebox.directions import DirectionSet
    from unredact.whitebox.extract import extract_directions

    path = out / DIRECTIONS
    if path.is_file():
        directions = DirectionSet.load(path)
        if directions.model_id != backend.spec:
            raise UnredactError(f"{path} was extracted from {directions.model_id}, not {backend.spec}")
        console.print(f"[green]directions already in {path}[/]")
        return directions
    return extract_directions(
        backend, s.probes, path, None, s.forward_batch_size, s.response_tokens, s.direction_prompts
    )


def _train_censored_ids(audit_run: str) -> set[str]:
    from unredact.whitebox.extract import censored_ids

    return censored_ids(Path(audit_run))


def search_prompts(backend: HFBackend, s: RemoveSettings, probes: Sequence[Probe], out: Path) -> dict[str, list[Probe]]:
    """Train-split prompts the search scores, chosen once and saved (a resumed search scores the same).

    Sensitive: the ones a given audit judged censored, else all; then per language the highest
    refusal-opening scores of the unedited model (where there is censorship to remove).
    """
    from unredact.whitebox.objectives import chats_for, refusal_opening_scores

    by_id = {p.id: p for p in probes}
    path = out / SEARCH_PROMPTS
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return {kind: [by_id[i] for i in ids] for kind, ids in saved["ids"].items()}
    train = [p for p in probes if p.split == "train"]
    sensitive = [p for p in train if p.kind == "sensitive"]
    if s.audit_run:
        keep = _train_censored_ids(s.audit_run)
        sensitive = [p for p in sensitive if p.id in keep]
        if not sensitive:
            raise UnredactError(f"{s.audit_run} judged no train-split sensitive answer censored")
    langs = sorted({p.lang for p in sensitive})
    per_lang = max(1, s.search_sensitive // max(1, len(langs)))
    pool = [  # a balanced pool 4x the size needed, so that the choice below is not all one topic
        p
        for lang in langs
        for p in select_balanced(sensitive, kind="sensitive", split="train", n=4 * per_lang, langs=[lang])
    ]
    console.print(f"search prompts: scoring {len(pool)} train sensitive prompts on the unedited model")
    scores = refusal_opening_scores(
        backend,
        chats_for([p.prompt for p in pool], s.system_prompt),
        depth=s.proxy_depth,
        batch_size=s.forward_batch_size,
    )
    chosen: list[Probe] = []
    for lang in langs:
        ranked = sorted((i for i, p in enumerate(pool) if p.lang == lang), key=lambda i: -float(scores[i]))
        chosen += [pool[i] for i in ranked[:per_lang]]
    harmful = [p for p in train if p.kind == "harmful"][: s.search_harmful]
    harmless = [
        p for lang in s.kl_langs for p in [q for q in train if q.kind == "harmless" and q.lang == lang][: s.kl_prompts]
    ]
    result = {"sensitive": chosen, "harmful": harmful, "harmless": harmless}
    atomic_write_json(
        path,
        {
            "ids": {k: [p.id for p in v] for k, v in result.items()},
            "base_scores": {pool[i].id: round(float(scores[i]), 4) for i in range(len(pool))},
        },
    )
    return result


@dataclass
class Candidate:
    trial: int
    params: dict[str, Any]
    values: tuple[float, float, float]
    report: dict[str, Any]
    censorship: float = 0.0
    harmful_refusal: float = 0.0
    eligible: bool = False
    why_not: list[str] = field(default_factory=list)
    #: how far the candidate misses the constraints: harmful-refusal rate below the kept share of the
    #: original's, plus KL above the target (0 when eligible)
    shortfall: float = 0.0


def edited_audit(
    backend: HFBackend, s: RemoveSettings, out: Path, probe_file: Path, params: AblationParams, trial: int, split: str
) -> dict[str, Any]:
    """Judged audit of the model as edited by ``params`` (already applied): dev answers are cut at
    ``confirm_max_new_tokens``, test answers at ``max_new_tokens``."""
    dev = split == "dev"
    return run_audit(
        backend,
        s,
        out,
        probe_file,
        split=split,
        kinds=KINDS_DEV if dev else KINDS_TEST,
        max_new_tokens=s.confirm_max_new_tokens if dev else s.max_new_tokens,
        label=f"{s.model}+ablation-trial{trial}",
        edit=params.to_params(),
    )


def confirm_stage(
    backend: HFBackend,
    deltas: AblationDeltas,
    directions: DirectionSet,
    study: optuna.Study,
    s: RemoveSettings,
    out: Path,
    probe_file: Path,
    base_dev: dict[str, Any],
) -> tuple[Candidate, list[Candidate]]:
    """Generate and judge the dev split with each candidate edit; choose by the stated rule."""
    from unredact.whitebox.search import AblationParams, pareto_candidates

    trials = pareto_candidates(study, s.candidates, s.kl_max)
    if not trials:
        raise UnredactError("the search completed no trial; run again with more --trials or --budget-minutes")
    base_harm = _rate(base_dev, "harmful_refusal_rate")
    confirmed = []
    for t in trials:
        params = AblationParams.from_params(t.params)
        console.print(f"candidate trial {t.number}: {params.describe(deltas.n_layers)}")
        params.apply(deltas, directions)
        try:
            where = out / "confirm" / f"trial-{t.number}"
            report = edited_audit(backend, s, where, probe_file, params, t.number, "dev")
        finally:
            deltas.reset()
        c = Candidate(t.number, dict(t.params), tuple(t.values), report)  # type: ignore[arg-type]
        c.censorship, c.harmful_refusal = _rate(report, "censorship_index"), _rate(report, "harmful_refusal_rate")
        harm_gap, kl_gap = s.harmful_keep * base_harm - c.harmful_refusal, c.values[2] - s.kl_max
        if harm_gap > 0:
            c.why_not.append(f"harmful refusal {c.harmful_refusal:.0%} < {s.harmful_keep:.0%} of {base_harm:.0%}")
        if kl_gap > 0:
            c.why_not.append(f"KL {c.values[2]:.3f} > {s.kl_max}")
        c.shortfall = max(0.0, harm_gap) + max(0.0, kl_gap)
        c.eligible = not c.why_not
        confirmed.append(c)
    return choose(confirmed), confirmed


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """Lowest dev censorship index among eligible candidates (ties: lower KL); if none is eligible, the
    one that misses the constraints by least (harmful-refusal shortfall + KL excess), then the lowest
    censorship: a candidate never wins by giving up more of the safety refusals than another."""
    eligible = [c for c in candidates if c.eligible]
    if eligible:
        return min(eligible, key=lambda c: (c.censorship, c.values[2], c.trial))
    return min(candidates, key=lambda c: (round(c.shortfall, 6), c.censorship, c.values[2], c.trial))


def export_stage(backend: HFBackend, chosen: AblationParams, trial: int, out: Path, card: str) -> tuple[Path, float]:
    """Export the edited model (applied in place) and check that it reloads with the same logits."""
    from unredact.whitebox.export import export_checked

    model_dir = out / MODEL_DIR
    marker = out / EXPORT_CHECK
    if marker.is_file() and (model_dir / "config.json").is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("trial") == trial and done.get("params") == chosen.to_params():
            console.print(f"[green]edited model already exported to {model_dir}[/]")
            return model_dir, float(done["reload_max_abs_diff"])
    diff = export_checked(backend, model_dir, card)
    atomic_write_json(
        marker,
        {
            "trial": trial,
            "params": chosen.to_params(),
            "reload_max_abs_diff": diff,
            "files": weight_hashes(model_dir),
        },
    )
    return model_dir, diff


def adapter_stage(
    backend: HFBackend, deltas: AblationDeltas, params: AblationParams, directions: DirectionSet, out: Path
) -> str:
    """With ``--adapter``: the applied edit as a PEFT LoRA adapter in OUT/adapter, checked against the
    edited model; returns the card's line about it (also when there can be no adapter, and why)."""
    marker = out / EXPORT_CHECK
    done = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
    if done.get("params") == params.to_params() and "adapter" in done:
        console.print(f"[green]adapter already handled ({done['adapter']['note']})[/]")
        return str(done["adapter"]["note"])
    shutil.rmtree(out / ADAPTER_DIR, ignore_errors=True)  # never leave the adapter of another edit behind
    if params.norm_preserving:
        note, check = "no PEFT adapter: the chosen edit is norm-preserving, which is not rank-1 (use `model/`)", None
    else:
        try:
            check = _write_adapter(backend, deltas, params, directions, out / ADAPTER_DIR)
        except UnredactError as err:
            note, check = f"no PEFT adapter: {err}", None
        else:
            note = (
                "PEFT LoRA adapter (`adapter/`, rank 1 per edited weight): the original model plus the adapter "
                f"picks the edited model's next token at {check['argmax_agreement']:.1%} of the check positions "
                f"(mean KL {check['mean_kl']:.2g}, max |Δlogit| {check['max_abs_diff']:.2g})"
            )
    console.print(note)
    atomic_write_json(marker, {**done, "adapter": {"note": note, "check": check}})
    return note


def _write_adapter(
    backend: HFBackend, deltas: AblationDeltas, params: AblationParams, directions: DirectionSet, adapter_dir: Path
) -> dict[str, float]:
    """Export the applied edit's rank-1 factors, then compare the edited model with original + adapter
    (the edit is reset for the comparison and applied again afterwards)."""
    from unredact.whitebox.export import CHECK_PROMPTS, compare_with_adapter, export_adapter, model_logits
    from unredact.whitebox.objectives import chats_for

    kind, _, rest = public_spec(backend.spec).partition("/")  # a hub id as PEFT expects it; no local paths
    export_adapter(deltas.as_lora(), adapter_dir, base_model=rest if kind == "hf" else public_spec(backend.spec))
    ids, mask = backend.encode_chats(chats_for(list(CHECK_PROMPTS)))
    expected = model_logits(backend.model, ids, mask)
    deltas.reset()
    try:
        return compare_with_adapter(backend.model, adapter_dir, ids, mask, expected)
    finally:
        params.apply(deltas, directions)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- the run ------------------------------------------------------------------------------------


def run_remove(
    model_spec: str = "demo/qwen2.5-coder-0.5b",
    out_dir: Path | str = Path("runs/remove"),
    trials: int = 24,
    budget_minutes: float | None = 30.0,
    **options: Any,
) -> RemoveResult:
    """Remove political censorship from a local model by searched directional ablation; see module doc.

    ``options`` are further :class:`RemoveSettings` fields. Re-running the same command resumes.
    """
    data = {"model": model_spec, "trials": trials, "budget_minutes": budget_minutes, **options}
    return _run(validate_settings(RemoveSettings, data), Path(out_dir))


def _run(s: RemoveSettings, out: Path) -> RemoveResult:
    from unredact.probes.loader import load_probes, write_probe_file
    from unredact.whitebox.ablation import AblationDeltas
    from unredact.whitebox.arch import arch_from_text
    from unredact.whitebox.search import AblationParams, prepare_search_data, run_search

    check_local(s.model)
    stages = Stages()
    with run_lock(out):  # creates out; a second process on the same --out gets a clear error
        check_run_settings(out, s)
        probes = load_probes(s.probes)
        probe_file = out / EVAL_PROBES
        write_probe_file(probe_file, eval_probes(probes, s))

        stages.start("load", f"loading {s.model}")
        backend = load_local_backend(s)
        deltas = AblationDeltas(backend.model, arch_from_text(backend.model, s.arch))

        stages.start("baseline", "1/7 baseline audits of the original model (dev, test)")
        common = {"label": s.model, "probe_file": probe_file}
        base_dev = run_audit(
            backend,
            s,
            out / "baseline-dev",
            split="dev",
            kinds=KINDS_DEV,
            max_new_tokens=s.confirm_max_new_tokens,
            **common,
        )
        base_test = run_audit(
            backend, s, out / "baseline-test", split="test", kinds=KINDS_TEST, max_new_tokens=s.max_new_tokens, **common
        )
        validation = proxy_validation_stage(backend, s, out)

        stages.start("directions", "2/7 censorship and refusal directions (train split)")
        directions = directions_stage(backend, s, out)

        stages.start("search", "3/7 search (cheap objectives, Optuna)")
        prompts = search_prompts(backend, s, probes, out)
        data = prepare_search_data(
            backend,
            prompts["sensitive"],
            prompts["harmful"],
            prompts["harmless"],
            kl_tokens=s.kl_tokens,
            depth=s.proxy_depth,
            batch_size=s.forward_batch_size,
            system_prompt=s.system_prompt,
        )
        directions_hash = sha256_file(out / DIRECTIONS)
        study = run_search(
            backend,
            deltas,
            directions,
            data,
            out,
            trials=s.trials,
            budget_minutes=s.budget_minutes,
            seed=s.seed,
            kl_max=s.kl_max,
            identity={"directions": directions_hash[:16], "dtype": s.dtype},
        )

        stages.start("confirm", "4/7 confirm Pareto candidates by generation on dev")
        chosen, confirmed = confirm_stage(backend, deltas, directions, study, s, out, probe_file, base_dev)
        notes = selection_notes(chosen, base_dev, s)
        atomic_write_json(out / SELECTION, selection_record(chosen, confirmed, base_dev, notes))
        console.print(f"chosen: trial {chosen.trial} (dev constraints {'met' if chosen.eligible else 'missed'})")

        stages.start("test", "5/7 audit of the edited model (test split)")
        params = AblationParams.from_params(chosen.params)
        params.apply(deltas, directions)
        after = edited_audit(
            backend, s, out / f"edited-test-trial-{chosen.trial}", probe_file, params, chosen.trial, "test"
        )
        kl = study.trials[chosen.trial].user_attrs.get("scores", {})
        kl_info = {"all": chosen.values[2], **kl.get("kl_by_lang", {})}

        stages.start("export", "6/7 export merged safetensors")
        card_args = {
            "s": s,
            "before": base_test,
            "after": after,
            "chosen": chosen,
            "confirmed": confirmed,
            "base_dev": base_dev,
            "params": params,
            "n_layers": deltas.n_layers,
            "kl": kl_info,
            "validation": validation,
            "study": study,
            "notes": notes,
            "counts": {k: len(v) for k, v in prompts.items()},
        }
        model_dir, diff = export_stage(backend, params, chosen.trial, out, model_card(**card_args, reload_diff=None))
        if s.adapter:
            card_args["adapter_note"] = adapter_stage(backend, deltas, params, directions, out)

        stages.start("card", "7/7 model card and reproducibility record")
        card_path = out / "MODEL_CARD.md"
        atomic_write_text(card_path, model_card(**card_args, reload_diff=diff))
        stages.stop()
        result = RemoveResult(
            out_dir=out,
            chosen_trial=chosen.trial,
            params=params.to_params(),
            before=base_test["summary"],
            after=after["summary"],
            kl=kl_info,
            targets_met=chosen.eligible,
            notes=notes,
            reload_max_abs_diff=diff,
            model_dir=model_dir,
            model_card=card_path,
            seconds=round(time.perf_counter() - stages.started, 1),
            peak_rss_mb=round(peak_rss_mb(), 1),
            timings=stages.timings,
        )
        atomic_write_json(out / "reproduce.json", reproduce_record(s, backend, result, study, probe_file, out))
        _print_summary(result)
        if s.verify != "none":
            backend.close()  # one model in memory at a time: verify loads the original, then the export
            del backend, deltas
            result.verify_passed = verify_stage(s, model_dir, out)
        return result


def verify_stage(s: LocalRunSettings, model_dir: Path, out: Path) -> bool:
    """``unredact verify`` of the exported model against the original, in OUT/verify."""
    from unredact.verify.cli import print_outcome
    from unredact.verify.run import run_verify
    from unredact.verify.settings import VerifySettings

    console.rule("[bold]verify[/]: exported model vs original")
    vs = VerifySettings(
        original=s.model,
        modified=f"hf/{model_dir}",
        profile=s.verify,
        probes=s.probes,
        system_prompt=s.system_prompt,
        dtype=s.dtype,
        device=s.device,
        batch_size=s.batch_size,
        judge=s.judge,
    )
    outcome = run_verify(vs, out / "verify")
    print_outcome(outcome.checks, outcome.passed, out / "verify")
    return outcome.passed


def proxy_validation_stage(backend: HFBackend, s: RemoveSettings, out: Path) -> dict[str, Any]:
    """How well the refusal proxy ranks the baseline's judged answers (AUC), saved once."""
    from unredact.report.build import rows_from_artifacts
    from unredact.rundir import RunDir
    from unredact.whitebox.objectives import validate_refusal_proxy

    path = out / PROXY_VALIDATION
    rows = [r for name in ("baseline-dev", "baseline-test") for r in rows_from_artifacts(RunDir(out / name))]
    judges = sorted({str(r.get("judge")) for r in rows})
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if data.get("judges") == judges:
            return data
    result = validate_refusal_proxy(backend, rows, depth=s.proxy_depth, batch_size=s.forward_batch_size)
    result["judges"] = judges
    atomic_write_json(path, result)
    o = result["overall"]["refusal_or_deflection"]
    console.print(
        f"refusal proxy vs judged refusal/deflection: AUC {o['auc']}, r {o['pearson_r']} (n={result['overall']['n']})"
    )
    return result


def selection_notes(chosen: Candidate, base_dev: dict[str, Any], s: RemoveSettings) -> list[str]:
    notes = list(chosen.why_not)
    base = _rate(base_dev, "censorship_index")
    if chosen.censorship >= base:
        notes.append(f"no candidate lowered the dev censorship index ({base:.0%} -> {chosen.censorship:.0%})")
    return notes


def selection_record(
    chosen: Candidate, confirmed: Sequence[Candidate], base_dev: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    return {
        "chosen_trial": chosen.trial,
        "targets_met": chosen.eligible,
        "notes": notes,
        "baseline_dev": {
            "censorship_index": base_dev["summary"]["censorship_index"],
            "harmful_refusal_rate": base_dev["summary"]["harmful_refusal_rate"],
        },
        "candidates": [
            {
                "trial": c.trial,
                "params": c.params,
                "objectives": dict(zip(("censorship_proxy", "harm_loss", "kl"), c.values, strict=True)),
                "dev_censorship_index": c.report["summary"]["censorship_index"],
                "dev_harmful_refusal_rate": c.report["summary"]["harmful_refusal_rate"],
                "eligible": c.eligible,
                "why_not": c.why_not,
            }
            for c in confirmed
        ],
    }


def reproduce_record(
    s: RemoveSettings, backend: HFBackend, result: RemoveResult, study: optuna.Study, probe_file: Path, out: Path
) -> dict[str, Any]:
    import optuna
    import torch
    import transformers

    from unredact.probes.loader import resolve_probe_path

    probe_path = resolve_probe_path(s.probes)
    export = json.loads((out / EXPORT_CHECK).read_text(encoding="utf-8"))
    return {
        "unredact": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "optuna": optuna.__version__,
        },
        "command": ["unredact", *sys.argv[1:]],
        "settings": public_settings(s),
        "seed": s.seed,
        "model": {k: v for k, v in backend.describe().items() if k != "origin"},
        "probes": {"file": s.probes, "sha256": sha256_file(probe_path), "eval_sha256": sha256_file(probe_file)},
        "directions_sha256": sha256_file(out / DIRECTIONS),
        "search": {"trials": len(study.trials), "complete": sum(t.values is not None for t in study.trials)},
        "chosen": {"trial": result.chosen_trial, "params": result.params, "kl": result.kl},
        "targets_met": result.targets_met,
        "notes": result.notes,
        "exported": export,
        "session_timings_s": result.timings,
        "session_seconds": result.seconds,
        "peak_rss_mb": result.peak_rss_mb,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _print_summary(r: RemoveResult) -> None:
    b, a = r.before, r.after
    console.print(
        f"[bold green]done[/] in {r.seconds:.0f} s (peak RSS {r.peak_rss_mb:.0f} MB): censorship index "
        f"{pct(b['censorship_index'])} -> {pct(a['censorship_index'])}, harmful refused "
        f"{pct(b['harmful_refusal_rate'])} -> {pct(a['harmful_refusal_rate'])}, KL {r.kl.get('all', 0):.3f}; "
        f"model in {r.model_dir}, card {r.model_card}"
    )
