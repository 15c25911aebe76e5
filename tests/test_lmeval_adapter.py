"""lm-evaluation-harness adapter: tasks run offline on a local fixture through unredact's own scorer."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from unredact.errors import UnredactError
from unredact.verify.lmeval import lmeval_available

if not lmeval_available():  # checked without importing lm_eval, which sets environment defaults on import
    pytest.skip("lm_eval is not installed (pip install 'unredact[lmeval]')", allow_module_level=True)

import torch
import yaml

from tests.conftest import tiny_model, tiny_tokenizer
from unredact.verify import loglik
from unredact.verify.lmeval import (
    GENERATION_UNSUPPORTED,
    make_lm,
    prefix_token_id,
    run_lmeval_tasks,
)

FIXTURE = Path(__file__).parent / "fixtures" / "lmeval_tiny"
TASK = "unredact_tiny_mc"
GROUP = "unredact_tiny_group"
ITEMS = [json.loads(line) for line in (FIXTURE / "tiny_mc_test.jsonl").read_text(encoding="utf-8").splitlines()]
DEV_ITEMS = [json.loads(line) for line in (FIXTURE / "tiny_mc_dev.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub access switched off, and any socket connection attempt fails the test."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"lm-eval tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)


@pytest.fixture
def tasks_dir(tmp_path: Path, offline: None) -> Path:
    """The fixture task with its data files (and the datasets cache) as absolute paths under tmp_path.

    ``datasets`` resolves relative ``data_files`` against the working directory, not the YAML's.
    """
    out = tmp_path / "tasks"
    out.mkdir()
    config = yaml.safe_load((FIXTURE / f"{TASK}.yaml").read_text(encoding="utf-8"))
    kwargs = config["dataset_kwargs"]
    kwargs["data_files"] = {split: str(FIXTURE / name) for split, name in kwargs["data_files"].items()}
    kwargs["cache_dir"] = str(tmp_path / "hf-datasets-cache")
    (out / f"{TASK}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    (out / "_unredact_tiny_group.yaml").write_text(
        (FIXTURE / "_unredact_tiny_group.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return out


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    tokenizer = tiny_tokenizer()
    return tiny_model("qwen2", len(tokenizer)), tokenizer


def run(
    tiny: tuple[Any, Any], tasks_dir: Path, tasks: list[str] | None = None, **kw: Any
) -> dict[str, dict[str, float]]:
    model, tokenizer = tiny
    return run_lmeval_tasks(model, tokenizer, tasks or [TASK], include_path=tasks_dir, include_defaults=False, **kw)


def _question(context: str) -> str:
    """The question a multiple-choice context asks last (earlier ones are few-shot examples)."""
    return context.rsplit("Question: ", 1)[1].split("\nAnswer:", 1)[0]


def test_fixture_task_runs_offline_on_tiny_model(tiny: tuple[Any, Any], tasks_dir: Path) -> None:
    results = run(tiny, tasks_dir, batch_size=4)
    metrics = results[TASK]
    assert metrics["n"] == len(ITEMS)
    for key in ("acc", "acc_norm"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["acc_stderr"] >= 0.0
    assert all(isinstance(v, float) for m in results.values() for v in m.values())


def test_results_follow_our_scorer_request_by_request(
    tiny: tuple[Any, Any], tasks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acc recomputed by hand from the scores our scorer gave equals lm-eval's acc: the mapping is right."""
    seen: dict[tuple[str, str], float] = {}
    real = loglik.continuation_logliks

    def spy(model: Any, tokenizer: Any, requests: Any, **kw: Any) -> list[loglik.Loglik]:
        out = real(model, tokenizer, requests, **kw)
        seen.update({tuple(r): s.logprob for r, s in zip(requests, out, strict=True)})
        return out

    monkeypatch.setattr(loglik, "continuation_logliks", spy)
    acc = run(tiny, tasks_dir, batch_size=3)[TASK]["acc"]
    assert len(seen) == sum(len(item["choices"]) for item in ITEMS)
    hits = 0
    for item in ITEMS:
        context = f"Question: {item['question']}\nAnswer:"
        scores = [seen[(context, " " + choice)] for choice in item["choices"]]
        hits += scores.index(max(scores)) == item["answer"]
    assert acc == pytest.approx(hits / len(ITEMS))


def test_rigged_scorer_gets_full_marks(tiny: tuple[Any, Any], tasks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scorer that favours exactly the right answers scores 1.0 only if each result reaches its own request."""
    correct = {item["question"]: item["choices"][item["answer"]] for item in ITEMS + DEV_ITEMS}
    calls: list[int] = []

    def rigged(model: Any, tokenizer: Any, requests: Any, **kw: Any) -> list[loglik.Loglik]:
        calls.append(len(requests))
        return [
            loglik.Loglik(0.0 if cont.strip() == correct[_question(ctx)] else -5.0 - len(cont), len(cont), False)
            for ctx, cont in requests
        ]

    monkeypatch.setattr(loglik, "continuation_logliks", rigged)
    results = run(tiny, tasks_dir, num_fewshot=1, batch_size=2)
    assert results[TASK]["acc"] == 1.0
    assert results[TASK]["acc_norm"] == 1.0
    assert results[TASK]["n"] == len(ITEMS)
    assert calls == [sum(len(item["choices"]) for item in ITEMS)]

    def anti(model: Any, tokenizer: Any, requests: Any, **kw: Any) -> list[loglik.Loglik]:
        return [loglik.Loglik(-1.0 if c.strip() == correct[_question(x)] else 0.0, 1, False) for x, c in requests]

    monkeypatch.setattr(loglik, "continuation_logliks", anti)
    assert run(tiny, tasks_dir)[TASK]["acc"] == 0.0


def test_limit_fewshot_and_groups(tiny: tuple[Any, Any], tasks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    contexts: list[str] = []
    real = loglik.continuation_logliks

    def spy(model: Any, tokenizer: Any, requests: Any, **kw: Any) -> list[loglik.Loglik]:
        contexts.extend(ctx for ctx, _ in requests)
        return real(model, tokenizer, requests, **kw)

    monkeypatch.setattr(loglik, "continuation_logliks", spy)
    results = run(tiny, tasks_dir, limit=3, num_fewshot=2)
    assert results[TASK]["n"] == 3
    assert contexts and all(ctx.count("Question: ") == 3 for ctx in contexts)  # 2 shots + the question
    assert all(DEV_ITEMS[0]["question"] in ctx for ctx in contexts)

    grouped = run(tiny, tasks_dir, [GROUP])
    assert grouped[GROUP]["n"] == len(ITEMS)
    assert grouped[GROUP]["acc"] == pytest.approx(grouped[TASK]["acc"])


def test_adapter_loglikelihood_equals_continuation_logliks(tiny: tuple[Any, Any]) -> None:
    from lm_eval.api.instance import Instance

    model, tokenizer = tiny
    pairs = [
        ("Question: What colour is the sky?\nAnswer:", " blue"),
        ("The capital of France is", " Paris"),
        ("a", " much longer continuation than its context"),
        ("天安门", " square"),
        ("The capital of France is", " Rome"),
    ]
    lm = make_lm(model, tokenizer, batch_size=2)
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)])
    want = loglik.continuation_logliks(model, tokenizer, pairs, batch_size=16)
    assert [g[0] for g in got] == pytest.approx([w.logprob for w in want], abs=1e-5)
    assert [g[1] for g in got] == [w.greedy for w in want]

    # an empty context conditions on the prefix token (EOS here: the tiny tokenizer has no BOS)
    (empty,) = lm.loglikelihood([Instance("loglikelihood", {}, ("", "hello"), 0)])
    prefix_text = tokenizer.convert_ids_to_tokens(prefix_token_id(tokenizer))
    (ref,) = loglik.continuation_logliks(model, tokenizer, [(prefix_text, "hello")])
    assert empty[0] == pytest.approx(ref.logprob, abs=1e-5)


def test_loglikelihood_rolling(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.api.instance import Instance

    from unredact.verify import lmeval

    model, tokenizer = tiny
    text = "Rolling windows score every token of a long text exactly once."
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix_text = tokenizer.convert_ids_to_tokens(prefix_token_id(tokenizer))
    (whole,) = loglik.continuation_logliks(model, tokenizer, [(prefix_text, text)])

    (one_window,) = make_lm(model, tokenizer).loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert one_window == pytest.approx(whole.logprob, abs=1e-4)

    windows: list[tuple[list[int], list[int]]] = []
    real = lmeval.score_token_windows

    def spy(m: Any, w: Any) -> list[tuple[float, bool]]:
        windows.extend(w)
        return real(m, w)

    monkeypatch.setattr(lmeval, "score_token_windows", spy)
    (rolled,) = make_lm(model, tokenizer, max_length=16).loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (text,), 0)]
    )
    assert len(windows) > 1
    assert [t for _, cont in windows for t in cont] == tokens  # every token predicted once, in order
    assert all(len(ctx) + len(cont) - 1 <= 16 for ctx, cont in windows)
    assert math.isfinite(rolled) and rolled < 0


def test_generate_until_is_refused(tiny: tuple[Any, Any], tasks_dir: Path) -> None:
    from lm_eval.api.instance import Instance

    model, tokenizer = tiny
    with pytest.raises(UnredactError, match="generation tasks are not supported"):
        make_lm(model, tokenizer).generate_until([Instance("generate_until", {}, ("Hi", {"until": ["\n"]}), 0)])

    config = yaml.safe_load((tasks_dir / f"{TASK}.yaml").read_text(encoding="utf-8"))
    config.update(task="unredact_tiny_gen", output_type="generate_until", doc_to_target="{{choices[answer]}}")
    config["metric_list"] = [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]
    del config["doc_to_choice"]
    (tasks_dir / "gen.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(UnredactError) as err:
        run(tiny, tasks_dir, ["unredact_tiny_gen"])
    assert GENERATION_UNSUPPORTED in str(err.value) and "unredact_tiny_gen" in str(err.value)


def test_unknown_task_names_the_task_and_include_path(tiny: tuple[Any, Any], tasks_dir: Path) -> None:
    with pytest.raises(UnredactError) as err:
        run(tiny, tasks_dir, ["unredact_tiny_m"])
    message = str(err.value)
    assert "'unredact_tiny_m'" in message and str(tasks_dir) in message and TASK in message  # a suggestion


def test_dataset_not_available_offline(tiny: tuple[Any, Any], tasks_dir: Path) -> None:
    config = yaml.safe_load((tasks_dir / f"{TASK}.yaml").read_text(encoding="utf-8"))
    config.update(task="unredact_tiny_hub", dataset_path="unredact-tests/no-such-dataset")
    del config["dataset_kwargs"]
    (tasks_dir / "hub.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(UnredactError) as err:
        run(tiny, tasks_dir, ["unredact_tiny_hub"])
    message = str(err.value)
    assert "unredact_tiny_hub" in message and "no-such-dataset" in message and "\n" not in message

    config.update(task="unredact_tiny_nofile", dataset_path="json")
    config["dataset_kwargs"] = {"data_files": {"test": str(tasks_dir / "missing.jsonl")}}
    (tasks_dir / "nofile.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(UnredactError, match=r"missing\.jsonl"):
        run(tiny, tasks_dir, ["unredact_tiny_nofile"])


def test_missing_lm_eval_is_a_clear_error(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from unredact.verify import lmeval

    monkeypatch.setattr(lmeval, "lmeval_available", lambda: False)
    monkeypatch.setattr(lmeval, "_lm_class", None)
    model, tokenizer = tiny
    with pytest.raises(UnredactError, match=r"pip install 'unredact\[lmeval\]'"):
        run_lmeval_tasks(model, tokenizer, [TASK])


def test_global_state_left_alone(tiny: tuple[Any, Any], tasks_dir: Path) -> None:
    root, lm_eval_logger = logging.getLogger(), logging.getLogger("lm_eval")
    before = (
        list(root.handlers),
        root.level,
        list(lm_eval_logger.handlers),
        lm_eval_logger.propagate,
        dict(os.environ),
        torch.get_rng_state(),
    )
    model, _ = tiny
    model.train()
    run(tiny, tasks_dir, num_fewshot=1)
    assert model.training  # restored after the eval-mode run
    model.eval()
    after = (
        list(root.handlers),
        root.level,
        list(lm_eval_logger.handlers),
        lm_eval_logger.propagate,
        dict(os.environ),
        torch.get_rng_state(),
    )
    assert after[:5] == before[:5]
    assert torch.equal(after[5], before[5])


def test_importing_the_module_does_not_import_lm_eval() -> None:
    import subprocess
    import sys

    code = "import sys, unredact.verify.lmeval as m; assert m.lmeval_available(); assert 'lm_eval' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_verify_runs_lmeval_tasks_on_both_models(tasks_dir: Path, tmp_path: Path) -> None:
    from tests.test_verify import save_tiny, settings
    from unredact.verify.run import run_verify

    orig, damaged = save_tiny(tmp_path / "orig"), save_tiny(tmp_path / "damaged", damage=2.0)
    s = settings(f"hf/{orig}", f"hf/{damaged}", lmeval_tasks=[TASK], lmeval_include=str(tasks_dir))
    outcome = run_verify(s, tmp_path / "v")
    knowledge = {c.name: c for c in outcome.checks}["knowledge"]
    lm = knowledge.metrics["lmeval"]
    assert set(lm) == {"original", "modified"}
    assert lm["original"][TASK]["n"] == len(ITEMS) == lm["modified"][TASK]["n"]
    assert (tmp_path / "v" / "lmeval" / "modified.json").is_file()
    assert "lm-eval tasks" in (tmp_path / "v" / "report.html").read_text(encoding="utf-8")
