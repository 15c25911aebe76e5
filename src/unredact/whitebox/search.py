"""Multi-objective Optuna search over ablation kernels; every trial edits the loaded model and resets it.

A trial picks an :class:`AblationParams` (kernel peak and width as fractions of depth, max and min
weights for the attention and MLP writers, per-layer or one interpolated global direction, plain or
norm-preserving, and how far the censorship direction leans toward the refusal direction), applies it
with :class:`AblationDeltas`, scores three objectives from forward passes
only (all minimised), and resets the weights bit-exactly:

1. ``censorship``: mean refusal-opening probability on train-split sensitive prompts;
2. ``harm_loss``: mean over train-split harmful prompts of max(0, base_i - edited_i), the refusal-opening
   probability each prompt lost (safety refusals must stay where they were; per prompt, so gains on
   some prompts cannot hide losses on others, and gaining refusals costs nothing);
3. ``kl``: mean KL(base ‖ edited) over the first k answer tokens of harmless prompts (EN/ZH/FR).

The study lives in ``search.journal`` (Optuna's append-only JournalStorage) in the run directory. A
killed search resumes the same study: trials left running are marked failed and their parameters
queued once more, the sampler is reseeded with the trial count (no repeated random draws), and
``trials`` counts completed trials over all sessions.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unredact.errors import UnredactError
from unredact.rundir import repair_jsonl
from unredact.ui import console
from unredact.whitebox.ablation import AblationDeltas, layer_weight_kernel
from unredact.whitebox.directions import DirectionSet
from unredact.whitebox.objectives import (
    OpeningTrie,
    TeacherForced,
    answer_logprobs,
    chats_for,
    kl_first_tokens,
    opening_trie,
    refusal_opening_scores,
    teacher_forced_inputs,
)

if TYPE_CHECKING:
    import optuna

    from unredact.backends.hf import HFBackend
    from unredact.probes.schema import Probe

JOURNAL = "search.journal"
STUDY_NAME = "unredact-remove"
OBJECTIVES = ("censorship", "harm_loss", "kl")
#: bump when an objective's definition changes: a study scored otherwise is not resumed
OBJECTIVES_VERSION = 2
#: bump when the search space changes: a study sampled from another space is not resumed
SEARCH_SPACE_VERSION = 2

#: A sensible first trial (queued when a study starts): a broad kernel over the upper-middle layers.
DEFAULT_PARAMS: dict[str, Any] = {
    "peak": 0.6,
    "width": 0.35,
    "attn_max": 1.0,
    "attn_min_frac": 0.3,
    "mlp_max": 1.0,
    "mlp_min_frac": 0.3,
    "direction": "per_layer",
    "direction_at": 0.6,
    "norm_preserving": False,
    "refusal_mix": 0.0,
}

#: A second queued trial: a narrower kernel on the later layers with stronger MLP ablation, where
#: heretic's best trials sat on both demo models; on the 0.5B's train objectives it had a lower refusal
#: proxy (0.168 vs 0.176) at a lower KL (0.025 vs 0.034) than the default, at the same harm loss.
LATE_PARAMS: dict[str, Any] = {**DEFAULT_PARAMS, "peak": 0.8, "width": 0.2, "mlp_max": 1.4}

#: A third queued trial: later still, with the direction turned 15% toward the refusal direction. A
#: model whose political refusals reuse its safety-refusal phrasing (the 0.5B's English "I'm sorry, but I
#: can't...") keeps them under an edit orthogonal to the refusal direction; a small mix removes them at
#: some cost in harmful-refusal mass, which the harm-loss objective and the dev confirmation weigh. On
#: the 0.5B's train objectives: proxy 0.109 vs 0.168, KL 0.017 vs 0.025, harm loss 0.031 vs 0.003.
MIXED_PARAMS: dict[str, Any] = {**LATE_PARAMS, "peak": 0.85, "refusal_mix": 0.15}

#: Trials queued when a study starts, before the sampler's own (random, then TPE) trials.
QUEUED_PARAMS: tuple[dict[str, Any], ...] = (DEFAULT_PARAMS, LATE_PARAMS, MIXED_PARAMS)


@dataclass(frozen=True)
class AblationParams:
    """One point of the search space. Positions are fractions of depth, so a study fits any model size.

    Layer l of L gets ``w_l = layer_weight_kernel(L, peak*(L-1), max(0.5, width*L), min, max)[l]`` with
    ``min = min_frac * max`` (so min <= max), separately for attention and MLP writers. ``direction``
    is ``per_layer`` (layer l uses the direction of the residual it writes into) or ``global`` (one
    direction interpolated at hidden-state index ``direction_at * L``).
    """

    peak: float
    width: float
    attn_max: float
    attn_min_frac: float
    mlp_max: float
    mlp_min_frac: float
    direction: str
    direction_at: float
    norm_preserving: bool
    refusal_mix: float = 0.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AblationParams:
        """From a trial's or a record's parameters (records older than ``refusal_mix`` mean 0)."""
        return cls(**{k: params.get(k, DEFAULT_PARAMS[k]) for k in DEFAULT_PARAMS})

    def to_params(self) -> dict[str, Any]:
        return asdict(self)

    def kernels(self, n_layers: int) -> tuple[list[float], list[float]]:
        peak = self.peak * (n_layers - 1)
        width = max(0.5, self.width * n_layers)
        attn = layer_weight_kernel(n_layers, peak, width, self.attn_min_frac * self.attn_max, self.attn_max)
        mlp = layer_weight_kernel(n_layers, peak, width, self.mlp_min_frac * self.mlp_max, self.mlp_max)
        return attn, mlp

    def direction_index(self, n_layers: int) -> float | None:
        return None if self.direction == "per_layer" else min(float(n_layers), self.direction_at * n_layers)

    def apply(self, deltas: AblationDeltas, directions: DirectionSet) -> None:
        attn, mlp = self.kernels(deltas.n_layers)
        deltas.apply(
            directions.mixed(self.refusal_mix),
            attn,
            mlp,
            direction_index=self.direction_index(deltas.n_layers),
            norm_preserving=self.norm_preserving,
        )

    def describe(self, n_layers: int) -> str:
        attn, mlp = self.kernels(n_layers)
        edited = [i for i, (a, m) in enumerate(zip(attn, mlp, strict=True)) if a or m]
        span = f"layers {edited[0]}-{edited[-1]}" if edited else "no layer"
        where = (
            "per-layer directions" if self.direction == "per_layer" else f"global direction @{self.direction_at:.2f}"
        )
        norm = ", norm-preserving" if self.norm_preserving else ""
        mix = f", refusal mix {self.refusal_mix:.2f}" if self.refusal_mix else ""
        return f"{span}, attn max {self.attn_max:.2f}, mlp max {self.mlp_max:.2f}, {where}{norm}{mix}"


def suggest(trial: optuna.Trial) -> AblationParams:
    """The search space (fixed, so every sampler sees the same parameters in every trial)."""
    return AblationParams(
        peak=trial.suggest_float("peak", 0.2, 0.95),
        width=trial.suggest_float("width", 0.1, 0.7),
        attn_max=trial.suggest_float("attn_max", 0.0, 1.5),
        attn_min_frac=trial.suggest_float("attn_min_frac", 0.0, 1.0),
        mlp_max=trial.suggest_float("mlp_max", 0.0, 1.5),
        mlp_min_frac=trial.suggest_float("mlp_min_frac", 0.0, 1.0),
        direction=trial.suggest_categorical("direction", ["per_layer", "global"]),
        direction_at=trial.suggest_float("direction_at", 0.2, 0.95),
        norm_preserving=trial.suggest_categorical("norm_preserving", [False, True]),
        refusal_mix=trial.suggest_float("refusal_mix", 0.0, 1.0),
    )


# ---- data and evaluation ------------------------------------------------------------------------


@dataclass
class SearchData:
    """Everything a trial needs, prepared once on the unedited model."""

    sensitive: list[list[dict[str, str]]]
    sensitive_langs: list[str]
    harmful: list[list[dict[str, str]]]
    kl_inputs: TeacherForced
    kl_base: torch.Tensor
    trie: OpeningTrie
    base_censorship: float
    base_harmful: torch.Tensor
    prompt_ids: dict[str, list[str]] = field(default_factory=dict)
    batch_size: int = 16

    def identity(self) -> str:
        """Hash of the prompt ids and opening trie: a resumed study must score the same things."""
        blob = json.dumps(
            {"ids": self.prompt_ids, "trie": sorted(self.trie.leaves), "k": self.kl_inputs.k}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrialScores:
    censorship: float
    harmful: float
    harm_loss: float
    kl: float
    kl_by_lang: dict[str, float]
    censorship_by_lang: dict[str, float]

    def values(self) -> tuple[float, float, float]:
        return self.censorship, self.harm_loss, self.kl


def prepare_search_data(
    backend: HFBackend,
    sensitive: Sequence[Probe],
    harmful: Sequence[Probe],
    harmless: Sequence[Probe],
    *,
    kl_tokens: int = 4,
    depth: int = 2,
    batch_size: int = 16,
    system_prompt: str | None = None,
) -> SearchData:
    """Chats, the opening trie, base scores and base KL log-probs (the model must be unedited)."""
    for name, items in (("sensitive", sensitive), ("harmful", harmful), ("harmless", harmless)):
        if not items:
            raise UnredactError(f"the search needs train-split {name} prompts; none selected")
    trie = opening_trie(backend, depth)
    sens = chats_for([p.prompt for p in sensitive], system_prompt)
    harm = chats_for([p.prompt for p in harmful], system_prompt)
    kl_inputs = teacher_forced_inputs(
        backend,
        chats_for([p.prompt for p in harmless], system_prompt),
        [p.lang for p in harmless],
        kl_tokens,
        batch_size,
    )
    kl_base = answer_logprobs(backend.model, kl_inputs)
    base_s = refusal_opening_scores(backend, sens, trie=trie, batch_size=batch_size)
    base_h = refusal_opening_scores(backend, harm, trie=trie, batch_size=batch_size)
    return SearchData(
        sensitive=sens,
        sensitive_langs=[p.lang for p in sensitive],
        harmful=harm,
        kl_inputs=kl_inputs,
        kl_base=kl_base,
        trie=trie,
        base_censorship=float(base_s.mean()),
        base_harmful=base_h,
        prompt_ids={
            "sensitive": [p.id for p in sensitive],
            "harmful": [p.id for p in harmful],
            "harmless": [p.id for p in harmless],
        },
        batch_size=batch_size,
    )


def evaluate(backend: HFBackend, data: SearchData) -> TrialScores:
    """Score the model as it is now (edited or not) on the search data."""
    sens = refusal_opening_scores(backend, data.sensitive, trie=data.trie, batch_size=data.batch_size)
    harm = refusal_opening_scores(backend, data.harmful, trie=data.trie, batch_size=data.batch_size)
    kl = kl_first_tokens(data.kl_base, backend.model, data.kl_inputs)
    by_lang = {
        lang: round(float(sens[[i for i, x in enumerate(data.sensitive_langs) if x == lang]].mean()), 5)
        for lang in dict.fromkeys(data.sensitive_langs)
    }
    return TrialScores(
        censorship=float(sens.mean()),
        harmful=float(harm.mean()),
        harm_loss=float((data.base_harmful - harm).clamp(min=0.0).mean()),
        kl=kl["all"],
        kl_by_lang={k: round(v, 5) for k, v in kl.items() if k != "all"},
        censorship_by_lang=by_lang,
    )


# ---- ranking ------------------------------------------------------------------------------------


def scalarise(values: Sequence[float], kl_max: float = 0.1) -> float:
    """One number to rank trials by (lower is better):

        censorship + 2 · harm_loss + 5 · max(0, kl - kl_max) + 0.25 · kl

    The refusal proxies are probabilities in [0, 1]; KL beyond the target costs steeply, below it a
    little (of two equally uncensored trials, the gentler edit wins).
    """
    censorship, harm_loss, kl = values
    return censorship + 2.0 * harm_loss + 5.0 * max(0.0, kl - kl_max) + 0.25 * kl


def pareto_candidates(study: optuna.Study, n: int, kl_max: float = 0.1) -> list[optuna.trial.FrozenTrial]:
    """Up to ``n`` trials to confirm: the Pareto front ranked by :func:`scalarise`, topped up from the rest."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    front = {t.number for t in study.best_trials} if done else set()
    ranked = sorted(done, key=lambda t: (t.number not in front, scalarise(t.values, kl_max), t.number))
    return ranked[:n]


# ---- the study ----------------------------------------------------------------------------------


def open_study(out_dir: Path, identity: dict[str, Any], seed: int = 0, startup: int = 6) -> optuna.Study:
    """Create or load the study in ``out_dir/search.journal``; refuse a journal of another search.

    The sampler is multi-objective TPE after ``startup`` random trials (the queued ones included),
    seeded with ``seed`` plus the number of trials already in the study.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / JOURNAL
    repair_jsonl(path)  # a kill in the middle of an append leaves a torn last line
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        directions=["minimize"] * len(OBJECTIVES),
        load_if_exists=True,
    )
    old = study.user_attrs.get("identity")
    if old is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
        study.set_user_attr("identity", identity)
    elif old != identity:
        diffs = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise UnredactError(f"{path} holds another search ({', '.join(diffs)} differ); use another --out or delete it")
    _recover(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.trials), multivariate=True, n_startup_trials=startup, constant_liar=False
        )
    return study


def _recover(study: optuna.Study) -> None:
    """Fail trials a killed process left running and queue each interrupted parameter set once more.

    A parameter set is queued again only if no other trial (complete, queued, or an earlier retry)
    has it, so a trial that fails deterministically is retried once, and completed trials never repeat.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if not trials:
        for params in QUEUED_PARAMS:
            study.enqueue_trial(params)
        return
    for t in trials:
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    seen: dict[str, int] = {}
    for t in trials:
        key = json.dumps(t.params, sort_keys=True)
        seen[key] = seen.get(key, 0) + 1
    for t in trials:
        key = json.dumps(t.params, sort_keys=True)
        interrupted = "scores" not in t.user_attrs  # scored trials failed on their values, not a kill
        if t.state == TrialState.FAIL and t.params and interrupted and seen[key] == 1:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            seen[key] += 1


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    return list(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def run_search(
    backend: HFBackend,
    deltas: AblationDeltas,
    directions: DirectionSet,
    data: SearchData,
    out_dir: Path,
    *,
    trials: int,
    budget_minutes: float | None = None,
    seed: int = 0,
    kl_max: float = 0.1,
    identity: dict[str, Any] | None = None,
    on_trial: Callable[[int], None] | None = None,
) -> optuna.Study:
    """Run until ``trials`` trials are complete in the study (over all sessions) or the budget is spent.

    ``on_trial(number)`` is called after a trial's edit is applied, before scoring (tests use it to
    simulate a kill). The model is always reset, also when a trial fails.
    """
    from optuna.trial import TrialState

    ident = {
        "data": data.identity(),
        "model": directions.model_id,
        "seed": seed,
        "objectives": OBJECTIVES_VERSION,
        "space": SEARCH_SPACE_VERSION,
        **(identity or {}),
    }
    study = open_study(out_dir, ident, seed, startup=max(3, min(10, trials // 3)))
    remaining = trials - len(completed(study))
    if remaining <= 0:
        console.print(f"[green]search: {len(completed(study))} trials already complete in {out_dir / JOURNAL}[/]")
        return study
    n_layers = deltas.n_layers

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        params = suggest(trial)
        started = time.perf_counter()
        try:
            params.apply(deltas, directions)
            if on_trial is not None:
                on_trial(trial.number)
            scores = evaluate(backend, data)
        finally:
            deltas.reset()
        trial.set_user_attr("scores", asdict(scores))
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        trial.set_user_attr("summary", params.describe(n_layers))
        if not all(math.isfinite(v) for v in scores.values()):
            raise UnredactError(f"trial {trial.number}: non-finite objective {scores.values()}")
        return scores.values()

    with _SearchProgress(study, trials, kl_max, data) as callback:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=budget_minutes * 60 if budget_minutes else None,
            callbacks=[callback],
            catch=(UnredactError,),
            gc_after_trial=False,
        )
    n_fail = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    console.print(
        f"search: {len(completed(study))} complete, {n_fail} failed, Pareto front {len(study.best_trials)} "
        f"-> {out_dir / JOURNAL}"
    )
    return study


class _SearchProgress:
    """A rich progress bar over completed trials showing the best trial so far by :func:`scalarise`."""

    def __init__(self, study: optuna.Study, total: int, kl_max: float, data: SearchData) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.study, self.kl_max, self.data = study, kl_max, data
        self.bar = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[best]}"),
            console=console,
        )
        self.task = self.bar.add_task("search", total=total, completed=len(completed(study)), best=self._best())

    def _best(self) -> str:
        base = f"base: refusal {self.data.base_censorship:.3f}, harmful {float(self.data.base_harmful.mean()):.3f}"
        done = completed(self.study)
        if not done:
            return base
        t = min(done, key=lambda t: scalarise(t.values, self.kl_max))
        c, h, k = t.values
        return f"{base} | best #{t.number}: refusal {c:.3f}, harm loss {h:.3f}, KL {k:.3f}"

    def __enter__(self) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
        self.bar.__enter__()

        def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            self.bar.update(self.task, completed=len(completed(study)), best=self._best())

        return callback

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]
