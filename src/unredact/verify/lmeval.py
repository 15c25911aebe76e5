"""Run lm-evaluation-harness tasks (MMLU, CMMLU, C-Eval, ...) on a local model through unredact's scorer.

lm-eval is an optional extra (``pip install 'unredact[lmeval]'``); importing this module never needs it. The
adapter :class:`UnredactLM` (built lazily, see :func:`make_lm`) answers lm-eval's ``loglikelihood`` requests
with :func:`unredact.verify.loglik.continuation_logliks`, so a benchmark run scores exactly like unredact's
own capability checks, and ``loglikelihood_rolling`` (perplexity tasks) with rolling windows over the
model's context. Generation tasks are not supported: ``unredact verify`` only runs log-likelihood tasks.

:func:`run_lmeval_tasks` loads tasks with lm-eval's ``TaskManager`` (built-in tasks plus an optional
``include_path`` of task YAMLs) and runs ``lm_eval.evaluator.evaluate`` directly rather than
``simple_evaluate``, which would also reseed the global RNGs, run ``git`` and collect the environment.
Datasets come from wherever ``datasets`` finds them: the Hugging Face cache when offline
(``HF_DATASETS_OFFLINE=1``), or local files (``dataset_path: json`` with ``data_files``; note that
``datasets`` resolves relative ``data_files`` against the current directory, not the YAML's).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unredact.errors import UnredactError
from unredact.verify import loglik
from unredact.whitebox.arch import model_device

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance
    from lm_eval.api.model import LM
    from transformers import PreTrainedTokenizerBase

INSTALL_HINT = "lm-eval tasks need the optional extra: pip install 'unredact[lmeval]'"
GENERATION_UNSUPPORTED = (
    "generation tasks are not supported by the unredact adapter; use log-likelihood tasks "
    "(output_type multiple_choice or loglikelihood)"
)
DEFAULT_MAX_LENGTH_CAP = 4096  # rolling windows of a 128k-context model would not fit a CPU's memory

_lm_class: type[LM] | None = None


def lmeval_available() -> bool:
    """Whether lm-evaluation-harness is installed (without importing it)."""
    return importlib.util.find_spec("lm_eval") is not None


def _require_lmeval() -> None:
    if not lmeval_available():
        raise UnredactError(INSTALL_HINT)


_LMEVAL_ENV_DEFAULTS = ("HF_XET_HIGH_PERFORMANCE", "HF_HUB_ENABLE_HF_TRANSFER")


def _import_lmeval() -> None:
    """Import lm_eval, undoing the download-tuning environment defaults it sets on import."""
    _require_lmeval()
    unset = [key for key in _LMEVAL_ENV_DEFAULTS if key not in os.environ]
    import lm_eval  # noqa: F401

    for key in unset:
        os.environ.pop(key, None)


def default_max_length(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> int:
    """The model's context length as lm-eval's HF backend reads it, capped at 4096 tokens."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return min(value, DEFAULT_MAX_LENGTH_CAP)
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000:
        return min(value, DEFAULT_MAX_LENGTH_CAP)
    return 2048


def prefix_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token an empty context conditions on: BOS, else EOS (lm-eval's HF convention)."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if isinstance(tid, int):
            return tid
    raise UnredactError("the tokenizer has neither a BOS nor an EOS token to score text without a context")


@torch.no_grad()
def score_token_windows(model: nn.Module, windows: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """``(Σ log P(cont | ctx), greedy)`` for token-id windows, one forward pass each (windows can be long).

    The input is ``(ctx + cont)[:-1]``: the last continuation token is predicted, never fed, so a window of
    ``max_length + 1`` ids (lm-eval's rolling windows) fits a ``max_length`` model.
    """
    device = model_device(model)
    out: list[tuple[float, bool]] = []
    for ctx, cont in windows:
        if not ctx or not cont:
            raise UnredactError("a token window needs a non-empty context and continuation")
        seq = ctx + cont
        ids = torch.tensor([seq[:-1]], dtype=torch.long, device=device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        span = logits[0, len(ctx) - 1 :].float().log_softmax(-1)
        target = torch.tensor(cont, device=span.device)
        lp = span.gather(-1, target[:, None]).squeeze(-1)
        out.append((float(lp.sum()), bool((span.argmax(-1) == target).all())))
    return out


def _build_lm_class() -> type[LM]:
    _import_lmeval()
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import LM
    from tqdm import tqdm

    class UnredactLM(LM):
        """lm-eval model backed by an in-memory ``transformers`` model and unredact's log-likelihood scorer."""

        def __init__(
            self,
            model: nn.Module,
            tokenizer: PreTrainedTokenizerBase,
            *,
            batch_size: int = 16,
            max_length: int | None = None,
            progress: bool | Callable[[int], None] = False,
        ) -> None:
            super().__init__()
            if batch_size < 1:
                raise UnredactError(f"batch_size must be at least 1, got {batch_size}")
            self.model = model
            self.tokenizer = tokenizer
            self.batch_size = batch_size
            self.max_length = max_length if max_length is not None else default_max_length(model, tokenizer)
            self.progress = progress

        @property
        def tokenizer_name(self) -> str:
            return str(getattr(self.tokenizer, "name_or_path", "") or "unredact").replace("/", "__")

        def _progress(self, total: int, desc: str, disable_tqdm: bool) -> tuple[Callable[[int], None], Any]:
            if callable(self.progress):
                return self.progress, None
            bar = tqdm(total=total, desc=desc, disable=disable_tqdm or not self.progress)
            return bar.update, bar

        def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            args = [tuple(req.args) for req in requests]
            results: list[tuple[float, bool] | None] = [None] * len(args)
            with_ctx = [i for i, (ctx, _) in enumerate(args) if ctx]
            without_ctx = [i for i, (ctx, _) in enumerate(args) if not ctx]
            update, bar = self._progress(len(args), "unredact loglikelihood", disable_tqdm)
            try:
                scored = loglik.continuation_logliks(
                    self.model,
                    self.tokenizer,
                    [(args[i][0], args[i][1]) for i in with_ctx],
                    batch_size=self.batch_size,
                    max_length=self.max_length,
                    progress=update,
                )
                for i, s in zip(with_ctx, scored, strict=True):
                    results[i] = (s.logprob, s.greedy)
                if without_ctx:  # lm-eval's convention: an empty context conditions on the prefix token
                    prefix = prefix_token_id(self.tokenizer)
                    windows = []
                    for i in without_ctx:
                        cont = list(self.tokenizer(args[i][1], add_special_tokens=False)["input_ids"])
                        if not cont or len(cont) + 1 > self.max_length:
                            raise UnredactError(f"request {i}: continuation is empty or longer than the context")
                        windows.append(([prefix], cont))
                    for i, r in zip(without_ctx, score_token_windows(self.model, windows), strict=True):
                        results[i] = r
                    update(len(without_ctx))
            finally:
                if bar is not None:
                    bar.close()
            out = [r for r in results if r is not None]
            for req, r in zip(requests, out, strict=True):
                self.cache_hook.add_partial("loglikelihood", req.args, r)
            return out

        def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
            prefix = prefix_token_id(self.tokenizer)
            update, bar = self._progress(len(requests), "unredact loglikelihood_rolling", disable_tqdm)
            out: list[float] = []
            try:
                for req in requests:
                    (text,) = req.args
                    tokens = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                    windows = [
                        lm_utils.make_disjoint_window(w)
                        for w in lm_utils.get_rolling_token_windows(
                            token_list=tokens, prefix_token=prefix, max_seq_len=self.max_length, context_len=1
                        )
                    ]
                    total = sum(lp for lp, _ in score_token_windows(self.model, windows))
                    self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
                    out.append(total)
                    update(1)
            finally:
                if bar is not None:
                    bar.close()
            return out

        def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
            raise UnredactError(GENERATION_UNSUPPORTED)

    return UnredactLM


def lm_class() -> type[LM]:
    """The :class:`UnredactLM` class (a subclass of ``lm_eval.api.model.LM``), built on first use."""
    global _lm_class
    if _lm_class is None:
        _lm_class = _build_lm_class()
    return _lm_class


def make_lm(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool | Callable[[int], None] = False,
) -> LM:
    """An lm-eval ``LM`` that scores with unredact's scorer; ``progress`` is a tqdm bar (True) or a callback."""
    cls: Any = lm_class()
    lm: LM = cls(model, tokenizer, batch_size=batch_size, max_length=max_length, progress=progress)
    return lm


def __getattr__(name: str) -> Any:  # ``from unredact.verify.lmeval import UnredactLM`` builds it lazily
    if name == "UnredactLM":
        return lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def _load_tasks(task_manager: Any, tasks: Sequence[str], where: str) -> dict[str, Any]:
    """Load each task (resolving names, then downloading/opening its dataset), merged into one task dict."""
    known = set(task_manager.all_tasks)
    merged: dict[str, dict[str, Any]] = {"tasks": {}, "groups": {}, "group_map": {}}
    for name in tasks:
        if name not in known and not (name.endswith((".yaml", ".yml")) and Path(name).is_file()):
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnredactError(f"unknown lm-eval task {name!r}: not found in {where}{hint}")
        try:
            loaded = task_manager.load([name])
        except UnredactError:
            raise
        except Exception as exc:  # datasets raises many kinds (offline, missing files, bad config)
            raise UnredactError(f"lm-eval task {name!r}: could not load it or its dataset: {_one_line(exc)}") from exc
        for key in merged:
            merged[key].update(loaded.get(key, {}))
    return merged


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    """Float metrics of one results entry, ``,none`` filter suffix dropped; ``sample_len`` becomes ``n``."""
    out: dict[str, float] = {}
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # alias/name strings, "N/A" stderrs, per-metric sample_count dicts
        if key == "sample_len":
            out["n"] = float(value)
            continue
        metric, _, filt = key.partition(",")
        out[metric if filt in ("", "none") else key] = float(value)
    return out


def run_lmeval_tasks(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    *,
    include_path: Path | None = None,
    include_defaults: bool = True,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    seed: int = 0,
    progress: bool | Callable[[int], None] = False,
) -> dict[str, dict[str, float]]:
    """Run lm-eval tasks on a local model; ``{task: {"acc": .., "acc_stderr": .., "acc_norm": .., "n": ..}}``.

    Every task, sub-task and group lm-eval reports gets an entry with its float metrics; ``n`` is the
    number of documents scored (summed over sub-tasks for a group). Metrics of a non-default filter keep
    lm-eval's ``metric,filter`` key. ``include_defaults=False`` skips
    indexing lm-eval's ~15k built-in task configs (a few seconds) when only ``include_path`` tasks run.
    ``seed`` seeds the few-shot sampler; global RNGs are left alone.
    """
    if not tasks:
        raise UnredactError("no lm-eval tasks given")
    if include_path is not None and not Path(include_path).exists():
        raise UnredactError(f"lm-eval include path {include_path} does not exist")
    lm = make_lm(model, tokenizer, batch_size=batch_size, max_length=max_length, progress=progress)
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(include_path) if include_path is not None else None, include_defaults=include_defaults
    )
    where = " and ".join(
        [*(["the built-in lm-eval tasks"] if include_defaults else []), *([str(include_path)] if include_path else [])]
    )
    task_dict = _load_tasks(manager, tasks, where or "no task directory (include_defaults=False, no include_path)")
    for task in task_dict["tasks"].values():
        if task.get_config("output_type") == "generate_until":
            raise UnredactError(f"lm-eval task {task.config.task!r}: {GENERATION_UNSUPPORTED}")
        if num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=seed)

    was_training = model.training
    model.eval()
    try:
        results = evaluate(lm=lm, task_dict=task_dict, limit=limit, log_samples=False)
    finally:
        model.train(was_training)
    if results is None:  # only non-zero ranks get None; we always run as rank 0
        raise UnredactError("lm-eval returned no results")

    n_samples = {name: v.get("effective", v.get("original")) for name, v in (results.get("n-samples") or {}).items()}
    out: dict[str, dict[str, float]] = {}
    for section in ("results", "groups"):
        for name, entry in (results.get(section) or {}).items():
            metrics = out.setdefault(name, {})
            metrics.update(_metrics(entry))
            if "n" not in metrics and isinstance(n_samples.get(name), int):
                metrics["n"] = float(n_samples[name])
    return out
