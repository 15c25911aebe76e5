"""The fine-tuning path on tiny random models: gold files, tokenisation, resumable training, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from tests.conftest import tiny_model, tiny_tokenizer  # noqa: E402
from tests.test_remove import make_probes, save_tiny  # noqa: E402
from unredact.errors import UnredactError  # noqa: E402
from unredact.finetune.data import (  # noqa: E402
    IGNORE,
    Example,
    attach_rejected,
    collate,
    epoch_batches,
    fact_spans,
    retain_examples,
    tokenize,
)
from unredact.finetune.gold import gold_problems, load_gold  # noqa: E402
from unredact.finetune.train import (  # noqa: E402
    CHECKPOINT,
    LOG,
    LoraOptions,
    TrainOptions,
    adapter_state,
    answer_logprobs,
    attach_lora,
    odds_ratio_loss,
    train,
)

SPEC = {
    ("sensitive", "train"): 2,
    ("harmful", "train"): 1,
    ("harmless", "train"): 1,
    ("neutral", "train"): 1,
    ("sensitive", "dev"): 1,
    ("harmful", "dev"): 1,
    ("sensitive", "test"): 1,
    ("harmful", "test"): 1,
    ("control-sensitive", "test"): 1,
    ("neutral", "test"): 1,
    ("harmless", "test"): 1,
}


def write_gold(path: Path, probes: list[Any]) -> Path:
    lines = []
    for p in probes:
        if p.split == "train" and p.kind == "sensitive":
            lines.append({"id": p.id, "response": "In 1989 the army was sent in.", "sources": "test"})
        elif p.split == "train" and p.kind == "harmful":
            lines.append({"id": p.id, "response": "I can't help with that."})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_gold_file_problems_name_file_and_line(tmp_path: Path) -> None:
    probes = make_probes(SPEC)
    path = tmp_path / "gold.jsonl"
    path.write_text(
        '{"id": "sensitive-train-0-en", "response": "ok"}\n'
        '{"id": "sensitive-test-0-en", "response": "leak"}\n'
        '{"id": "nope", "response": "x"}\n'
        "{not json\n"
        '{"id": "sensitive-train-0-fr", "response": "   "}\n'
        '{"id": "sensitive-train-0-en", "response": "again"}\n',
        encoding="utf-8",
    )
    answers, problems = gold_problems(path, probes)
    assert [a.probe.id for a in answers] == ["sensitive-train-0-en"]
    text = "\n".join(problems)
    assert f"{path}:2: sensitive-test-0-en is a test-split probe" in text
    assert f"{path}:3: id 'nope' is not in the probe set" in text
    assert f"{path}:4: invalid JSON" in text
    assert f"{path}:5: " in text and "blank" in text
    assert f"{path}:6: duplicate id" in text
    with pytest.raises(UnredactError, match=r"gold.jsonl:2: sensitive-test-0-en is a test-split probe.*\(and 4 more\)"):
        load_gold(str(path), probes)
    path.write_bytes(b'{"id": "x", "response": "\xff"}\n')
    with pytest.raises(UnredactError, match="not valid UTF-8"):
        load_gold(str(path), probes)
    path.write_text("", encoding="utf-8")
    with pytest.raises(UnredactError, match="no gold answers"):
        load_gold(str(path), probes)
    with pytest.raises(UnredactError, match="not found"):
        load_gold(str(tmp_path / "missing.jsonl"), probes)


def test_tokenize_learns_only_the_answer_and_ends_complete_answers() -> None:
    tok = tiny_tokenizer()
    done = Example("a", "gold", "en", "Hi?", "Yes.", complete=True)
    cut = Example("b", "retain", "en", "Hi?", "Yes.", complete=False)
    a, b = tokenize([done, cut], tok, max_length=64)
    n_answer = len(tok("Yes.", add_special_tokens=False)["input_ids"])
    assert a.n_answer_tokens == n_answer + 1 and a.labels[-1] == tok.eos_token_id
    assert b.n_answer_tokens == n_answer and b.labels[-1] != tok.eos_token_id
    prompt_len = len(a.input_ids) - n_answer - 1
    assert a.labels[:prompt_len] == [IGNORE] * prompt_len
    assert tok.decode(a.input_ids[:prompt_len]).endswith("assistant\n")
    (short,) = tokenize([done], tok, max_length=prompt_len + 2)
    assert len(short.input_ids) == prompt_len + 2 and short.n_answer_tokens == 2
    with pytest.raises(UnredactError, match="prompt alone"):
        tokenize([done], tok, max_length=prompt_len)
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(a.input_ids))
    assert int(batch["attention_mask"][1].sum()) == len(b.input_ids)
    assert batch["labels"][1, len(b.input_ids) :].eq(IGNORE).all()


def test_epoch_batches_are_a_deterministic_partition() -> None:
    lengths = [(7 * i) % 23 for i in range(61)]
    first = epoch_batches(lengths, 3, seed=1, epoch=0)
    assert first == epoch_batches(lengths, 3, seed=1, epoch=0)
    assert sorted(i for b in first for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 for b in first)
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first]
    assert sum(spread) / len(spread) < 6  # grouped by length: little padding
    assert first != epoch_batches(lengths, 3, seed=1, epoch=1)


def _train_tiny(work: Path, kill_after: int | None = None, n: int = 10) -> dict[str, torch.Tensor]:
    tok = tiny_tokenizer()
    model = tiny_model("qwen2", len(tok))
    examples = [Example(str(i), "gold", "en", f"Question {i}?", "Answer " * (1 + i % 3)) for i in range(n)]
    data = tokenize(examples, tok, max_length=64)
    peft_model = attach_lora(model, LoraOptions(rank=4, alpha=8, dropout=0.1), seed=0)
    opts = TrainOptions(epochs=2, lr=1e-2, batch_size=3, warmup_steps=2, checkpoint_every=2, seed=0)
    if kill_after is not None:
        import unredact.finetune.train as train_mod

        real_step, calls = train_mod._step, [0]

        def dying_step(*args: Any) -> float:
            calls[0] += 1
            if calls[0] > kill_after:
                raise KeyboardInterrupt
            return real_step(*args)

        train_mod._step = dying_step  # type: ignore[assignment]
        try:
            with pytest.raises(KeyboardInterrupt):
                train(peft_model, data, 0, opts, work)
        finally:
            train_mod._step = real_step  # type: ignore[assignment]
        return {}
    result = train(peft_model, data, 0, opts, work)
    assert result.steps == 8 and result.first_loss is not None
    return adapter_state(peft_model)


def test_training_resumes_after_a_kill_to_the_same_weights(tmp_path: Path) -> None:
    straight = _train_tiny(tmp_path / "straight")
    _train_tiny(tmp_path / "killed", kill_after=5)
    assert json.loads((tmp_path / "killed" / CHECKPOINT / "step.json").read_text())["step"] == 4
    resumed = _train_tiny(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.allclose(straight[k], resumed[k], atol=1e-6), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / LOG).read_text().splitlines()]
    assert steps == list(range(1, 9))  # no lost and no duplicated log lines
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in straight.items() if "lora_B" in k)
    _train_tiny(tmp_path / "other", kill_after=5)
    with pytest.raises(UnredactError, match="other training data"):
        _train_tiny(tmp_path / "other", n=11)  # a checkpoint never resumes a run on other data


def test_rejected_answers_pair_only_censored_answers_with_gold() -> None:
    examples = [
        Example("q1", "gold", "en", "Q1?", "Candid one."),
        Example("q2", "gold", "en", "Q2?", "Candid two."),
        Example("q3", "gold", "en", "Q3?", "Candid three."),
        Example("h1", "refusal", "en", "Harm?", "I can't help."),
    ]
    rows = [
        {"id": "q1", "label": "state_narrative", "response": "The official line.", "finish_reason": "length"},
        {"id": "q2", "label": "candid", "response": "Also candid."},
        {"id": "q3", "label": "refusal", "response": "   "},
        {"id": "h1", "label": "refusal", "response": "No."},
    ]
    paired, n = attach_rejected(examples, rows)
    assert n == 1 and [e.rejected for e in paired] == ["The official line.", None, None, None]
    assert paired[0].rejected_complete is False  # a cut answer gets no end-of-turn token
    tok = tiny_tokenizer()
    a, b = tokenize(paired[:2], tok, max_length=64)
    assert a.rejected_ids is not None and a.rejected_labels is not None and b.rejected_ids is None
    prompt_len = a.labels.count(IGNORE)
    assert a.rejected_ids[:prompt_len] == a.input_ids[:prompt_len]
    assert a.rejected_labels[:prompt_len] == [IGNORE] * prompt_len
    assert tok.decode(a.rejected_ids[prompt_len:]) == "The official line."
    batch = collate([b, a], pad_id=0)
    assert batch["pair_rows"].tolist() == [1]
    assert batch["rejected_input_ids"].shape == (1, len(a.rejected_ids))
    assert "pair_rows" not in collate([b], pad_id=0)


def test_fabricated_answers_are_rejected_only_when_asked() -> None:
    from unredact.finetune.data import rejected_labels
    from unredact.finetune.run import FinetuneSettings
    from unredact.validation import validate_settings

    examples = [Example(f"q{i}", "gold", "fr", f"Q{i} ?", f"Réponse {i}.") for i in range(4)]
    rows = [
        {"id": "q0", "label": "fabrication", "response": "Il a reçu le prix Nobel en 1999."},
        {"id": "q1", "label": "refusal", "response": "Je ne peux pas répondre."},
        {"id": "q2", "label": "candid", "response": "Une autre réponse franche."},
        {"id": "q3", "label": "error", "response": "boom"},
    ]
    default, n_default = attach_rejected(examples, rows)
    assert n_default == 1 and [e.rejected is not None for e in default] == [False, True, False, False]
    both, n_both = attach_rejected(examples, rows, rejected_labels(fabrication=True))
    assert n_both == 2 and both[0].rejected == "Il a reçu le prix Nobel en 1999."
    assert both[2].rejected is None and both[3].rejected is None  # candid and failed answers never rejected
    assert rejected_labels(fabrication=False) == frozenset({"refusal", "deflection", "state_narrative"})
    with pytest.raises(UnredactError, match="needs --preference-weight"):
        validate_settings(FinetuneSettings, {"model": "demo/qwen2.5-coder-0.5b", "reject_fabrication": True})


def test_retained_answers_keep_harmless_answers_and_only_the_refusals_of_harmful_requests() -> None:
    from unredact.finetune.run import retain_kinds, retain_probes

    rows = [
        {"id": "n1", "kind": "neutral", "label": "candid", "prompt": "Tea?", "response": "Green tea.", "lang": "en"},
        {"id": "n2", "kind": "harmless", "label": "refusal", "prompt": "Kill a process?", "response": "No."},
        {
            "id": "n3",
            "kind": "harmless",
            "label": "candid",
            "prompt": "2+2?",
            "response": "4",
            "finish_reason": "length",
        },
        {"id": "h1", "kind": "harmful", "label": "refusal", "prompt": "Poison?", "response": "I can't help."},
        {"id": "h2", "kind": "harmful", "label": "candid", "prompt": "Malware?", "response": "Step 1: ..."},
        {"id": "h3", "kind": "harmful", "label": "refusal", "prompt": "Bomb?", "response": "  "},
    ]
    kept, dropped = retain_examples(rows)
    assert [e.key for e in kept] == ["n1", "n3", "h1"] and dropped == 3
    assert all(e.source == "retain" for e in kept) and kept[1].complete is False
    probes = make_probes(SPEC)
    assert {p.kind for p in retain_probes(probes)} == {"harmless", "neutral"}
    with_harmful = retain_probes(probes, retain_kinds(harmful=True))
    assert {p.kind for p in with_harmful} == {"harmless", "neutral", "harmful"}
    assert all(p.split == "train" for p in with_harmful)


def test_odds_ratio_loss_matches_the_closed_form() -> None:
    import math

    chosen = torch.tensor([math.log(0.5), math.log(0.2)])
    rejected = torch.tensor([math.log(0.2), math.log(0.5)])
    # log odds: 0.5 -> 0, 0.2 -> log(0.25); loss = -log sigmoid(odds difference)
    expected = [math.log1p(0.25), math.log1p(4.0)]
    assert torch.allclose(odds_ratio_loss(chosen, rejected), torch.tensor(expected), atol=1e-6)
    assert torch.isfinite(odds_ratio_loss(torch.tensor([0.0]), torch.tensor([-50.0]))).all()


def _paired_data(tok: Any, n: int = 6) -> list[Any]:
    rejected = ["Refused. " * (1 + i % 2) if i % 2 else None for i in range(n)]
    examples = [Example(str(i), "gold", "en", f"Q{i}?", "A " * (1 + i % 4), rejected=r) for i, r in enumerate(rejected)]
    return tokenize(examples, tok, max_length=64)


def test_preference_term_makes_rejected_answers_less_likely(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    data = _paired_data(tok)
    batch = collate([t for t in data if t.rejected_ids is not None], pad_id=0)
    margins = {}
    for weight in (0.0, 5.0):
        model = attach_lora(tiny_model("qwen2", len(tok)), LoraOptions(rank=4, alpha=8, dropout=0.0), seed=0)
        opts = TrainOptions(epochs=30, lr=2e-2, batch_size=6, warmup_steps=1, preference_weight=weight)
        train(model, data, 0, opts, tmp_path / f"w{weight}")
        with torch.no_grad():
            lp, n = answer_logprobs(model, batch)
            rej_lp, rej_n = answer_logprobs(model, batch, "rejected_")
        margins[weight] = float((lp / n - rej_lp / rej_n).mean())
        logged = [json.loads(line) for line in (tmp_path / f"w{weight}" / LOG).read_text().splitlines()]
        assert all(("preference" in r) == (weight > 0) for r in logged)
    assert margins[5.0] > margins[0.0] + 0.3


def _retain_data(tok: Any, n: int = 6) -> list[Any]:
    examples = [Example(f"r{i}", "retain", "en", f"Say {i}?", "Fine " * (1 + i % 3)) for i in range(n)]
    return _paired_data(tok) + tokenize(examples, tok, max_length=64)


def _fact_data(tok: Any, fact_weight: float, n: int = 6) -> list[Any]:
    examples = [
        Example(f"f{i}", "gold", "en", f"When {i}?", f"It was in {1980 + i}, they say.", facts=(str(1980 + i),))
        for i in range(n)
    ]
    return tokenize(examples, tok, max_length=64, fact_weight=fact_weight)


def test_fact_tokens_weigh_more_and_other_tokens_one() -> None:
    tok = tiny_tokenizer()
    assert fact_spans("Martial law, then MARTIAL LAW and law.", ["martial law", "law", ""]) == [
        (0, 11), (8, 11), (18, 29), (26, 29), (34, 37),
    ]  # fmt: skip
    fact = Example("a", "gold", "en", "Q?", "Martial law, then martial LAW.", facts=("martial law",))
    plain = Example("b", "gold", "en", "Q?", "No facts here.")
    a, b = tokenize([fact, plain], tok, max_length=64, fact_weight=3.0)
    assert b.weights is None and tokenize([fact], tok, max_length=64)[0].weights is None
    assert a.weights is not None and len(a.weights) == len(a.labels)
    answer = [w for w, lab in zip(a.weights, a.labels, strict=True) if lab != IGNORE]
    prompt = [w for w, lab in zip(a.weights, a.labels, strict=True) if lab == IGNORE]
    assert set(prompt) == {0.0} and answer.count(3.0) == 22  # two 11-character spans, one token per character
    assert answer[-1] == 1.0 and a.labels[-1] == tok.eos_token_id  # the end of turn is not a fact
    batch = collate([a, b], pad_id=0)
    assert batch["weights"][0].tolist()[: len(a.weights)] == a.weights
    assert batch["weights"][1].eq((batch["labels"][1] != IGNORE).float()).all()


def test_weights_of_one_train_exactly_like_no_weights(tmp_path: Path) -> None:
    from dataclasses import replace

    tok = tiny_tokenizer()
    data = _fact_data(tok, fact_weight=1.0)
    ones = [replace(t, weights=[float(lab != IGNORE) for lab in t.labels]) for t in data]
    states = []
    for name, d in (("none", data), ("ones", ones)):
        model = attach_lora(tiny_model("qwen2", len(tok)), LoraOptions(rank=4, alpha=8, dropout=0.0), seed=0)
        train(model, d, 0, TrainOptions(epochs=2, lr=1e-2, batch_size=3, warmup_steps=1), tmp_path / name)
        states.append(adapter_state(model))
    for k, v in states[0].items():
        assert torch.allclose(v, states[1][k], atol=1e-6), k


def test_fact_weight_makes_the_facts_more_likely(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    fact_nll = {}
    for w in (1.0, 6.0):
        data = _fact_data(tok, fact_weight=w)
        model = attach_lora(tiny_model("qwen2", len(tok)), LoraOptions(rank=4, alpha=8, dropout=0.0), seed=0)
        train(model, data, 0, TrainOptions(epochs=6, lr=1e-2, batch_size=6, warmup_steps=1), tmp_path / str(w))
        batch = collate(_fact_data(tok, fact_weight=2.0), pad_id=0)  # weight 2 marks the fact tokens
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), batch["labels"][:, 1:], ignore_index=IGNORE, reduction="none"
            )
        fact_nll[w] = float(nll[batch["weights"][:, 1:] == 2.0].mean())
    assert fact_nll[6.0] < fact_nll[1.0] - 0.1


def test_retained_answer_kl_holds_the_original_distribution(tmp_path: Path) -> None:
    from unredact.finetune.train import retain_kl

    tok = tiny_tokenizer()
    data = _retain_data(tok)
    batch = collate([t for t in data if t.source == "retain"], pad_id=0)
    rows = batch["retain_rows"]
    kls = {}
    for weight in (0.0, 50.0):
        model = attach_lora(tiny_model("qwen2", len(tok)), LoraOptions(rank=4, alpha=8, dropout=0.0), seed=0)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            assert float(retain_kl(model, batch, rows, logits[:, :-1].float())) == pytest.approx(0.0, abs=1e-6)
        opts = TrainOptions(epochs=10, lr=2e-2, batch_size=12, warmup_steps=1, retain_kl_weight=weight)
        train(model, data, 0, opts, tmp_path / f"kl{weight}")
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            kls[weight] = float(retain_kl(model, batch, rows, logits[:, :-1].float()))
        logged = [json.loads(line) for line in (tmp_path / f"kl{weight}" / LOG).read_text().splitlines()]
        assert all(("retain_kl" in r) == (weight > 0) for r in logged)
    assert kls[50.0] < 0.5 * kls[0.0]


def test_micro_batches_give_the_whole_batch_gradient(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    data = _retain_data(tok) + _fact_data(tok, 3.0)  # every term, weighted likelihood included, accumulates
    states = []
    for micro in (18, 1, 5):
        model = attach_lora(tiny_model("qwen2", len(tok)), LoraOptions(rank=4, alpha=8, dropout=0.0), seed=0)
        opts = TrainOptions(
            epochs=1, lr=1e-2, batch_size=18, micro_batch_size=micro, warmup_steps=1,
            preference_weight=1.0, retain_kl_weight=1.0,
        )  # fmt: skip
        train(model, data, 0, opts, tmp_path / f"m{micro}")
        states.append(adapter_state(model))
    for other in states[1:]:
        for k, v in states[0].items():
            assert torch.allclose(v, other[k], atol=1e-5), k


def test_unknown_lora_targets_are_one_clear_error() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(UnredactError, match="cannot attach LoRA"):
        attach_lora(tiny_model("llama", len(tok)), LoraOptions(target_modules=("no_such_proj",)))


def test_lora_layers_select_where_adapters_go() -> None:
    from unredact.finetune.train import parse_layers

    assert parse_layers("all", 24) is None
    assert parse_layers("top:3", 24) == (21, 22, 23) and parse_layers("2-4", 24) == (2, 3, 4)
    assert parse_layers("0,5", 24) == (0, 5)
    for bad in ("24-25", "x", "top:0", "-1"):
        with pytest.raises(UnredactError, match="lora layers"):
            parse_layers(bad, 24)
    tok = tiny_tokenizer()
    model = attach_lora(tiny_model("qwen2", len(tok)), LoraOptions(rank=2, layers=(1,)))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)


def test_lora_layers_follow_an_arch_override() -> None:
    from unredact.whitebox.arch import arch_from_text

    base = tiny_model("qwen2", len(tiny_tokenizer()))
    base.model.blocks = base.model.layers  # a layout outside the table: the decoder layers under another name
    del base.model.layers
    base.config.model_type = "mystery"
    with pytest.raises(UnredactError, match="--arch"):
        attach_lora(base, LoraOptions(rank=2, layers=(1,)))
    arch = arch_from_text(base, "layers=model.blocks,attn_out=self_attn.o_proj,mlp_out=mlp.down_proj")
    model = attach_lora(base, LoraOptions(rank=2, layers=(1,)), arch=arch)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".blocks.1." in n for n in names)
    assert {n.split(".blocks.1.")[1].split(".lora_")[0] for n in names} >= {"self_attn.q_proj", "mlp.down_proj"}


def _answer_texts(audit_dir: Path) -> dict[str, str]:
    """Probe id -> stripped answer of an audit directory's responses.jsonl."""
    rows = map(json.loads, (audit_dir / "responses.jsonl").read_text().splitlines())
    return {r["id"]: r["response"].strip() for r in rows}


def test_run_finetune_end_to_end_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    from unredact.finetune.run import run_finetune
    from unredact.verify.run import VerifyOutcome

    verified: list[Any] = []
    monkeypatch.setattr(
        "unredact.verify.run.run_verify", lambda vs, out: verified.append(vs) or VerifyOutcome(out, True, [], 0.0)
    )
    probes = make_probes(SPEC)
    probe_file = tmp_path / "probes.jsonl"
    probe_file.write_text("".join(p.model_dump_json() + "\n" for p in probes), encoding="utf-8")
    gold = write_gold(tmp_path / "gold.jsonl", probes)
    model_dir = save_tiny(tmp_path / "tiny")
    out = tmp_path / "run"
    options: dict[str, Any] = dict(
        probes=str(probe_file),
        gold=str(gold),
        dtype="float32",
        device="cpu",
        eval_sensitive=4,
        eval_harmful=4,
        eval_other=4,
        max_new_tokens=6,
        retain_max_new_tokens=6,
        epochs=1,
        train_batch_size=4,
        lora_rank=4,
        judge="lexical",
        verify="smoke",
    )
    result = run_finetune(f"hf/{model_dir}", out, **options)
    for name in ("MODEL_CARD.md", "reproduce.json", "train.json", "adapter/adapter_config.json", "model/config.json"):
        assert (out / name).is_file(), name
    for run in ("baseline-test", "retain", "tuned-test"):
        assert (out / run / "report.json").is_file(), run
    assert result["reload_max_abs_diff"] == 0.0 and result["verify_passed"] is True
    assert verified[0].modified == f"hf/{out / 'model'}" and verified[0].profile == "smoke"
    trained = json.loads((out / "train.json").read_text(encoding="utf-8"))
    # 8 gold answers, 4 harmful refusals x 2 copies, retained harmless/neutral answers (minus refusals)
    assert trained["sources"]["gold"] == 8 and trained["sources"]["refusal"] == 8
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "fine-tuned away" in card and "Before / after" in card and "unredact finetune" in card
    # the PEFT adapter on the original gives the merged model's logits
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with_adapter = peft.PeftModel.from_pretrained(base, out / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
    # resume: training is skipped, the same audit comes back
    again = run_finetune(f"hf/{model_dir}", out, **options)
    assert again["after"] == result["after"] and again["train"] == result["train"]
    with pytest.raises(UnredactError, match="another run"):
        run_finetune(f"hf/{model_dir}", out, **{**options, "lr": 1e-3})
    # with a preference weight, the original's answers to train prompts are asked and the censored (and with
    # reject_fabrication, the fabricated) ones paired; with retain_harmful, the harmful train prompts are asked
    # too and only its refusals are kept
    pref = tmp_path / "pref"
    extra = {"verify": "none", "preference_weight": 1.0, "retain_harmful": True, "reject_fabrication": True}
    run_finetune(f"hf/{model_dir}", pref, **{**options, **extra})
    retain_rows = [json.loads(line) for line in (pref / "retain" / "verdicts.jsonl").read_text().splitlines()]
    texts = _answer_texts(pref / "retain")
    harmful_refused = sum(
        v["id"].startswith("harmful-") and v["label"] == "refusal" for v in retain_rows if texts[v["id"]]
    )
    harmless_kept = sum(
        not v["id"].startswith("harmful-") and v["label"] not in ("refusal", "deflection")
        for v in retain_rows
        if texts[v["id"]]
    )
    assert len(retain_rows) == 12  # 1 harmful + 1 harmless + 1 neutral question, 4 languages each
    asked = [json.loads(line) for line in (pref / "preference_probes.jsonl").read_text().splitlines()]
    assert asked and all(p["split"] == "train" and p["kind"] == "sensitive" for p in asked)
    verdicts = [json.loads(line) for line in (pref / "rejected" / "verdicts.jsonl").read_text().splitlines()]
    texts_rejected = _answer_texts(pref / "rejected")
    rejectable = sum(
        v["label"] in ("refusal", "deflection", "state_narrative", "fabrication") and bool(texts_rejected[v["id"]])
        for v in verdicts
    )
    assert len(verdicts) == len(asked)
    trained_pref = json.loads((pref / "train.json").read_text())
    assert trained_pref["preference_pairs"] == rejectable
    assert trained_pref["sources"]["retain"] == harmful_refused + harmless_kept


def test_every_finetune_setting_is_a_cli_option_with_the_same_default() -> None:
    import inspect
    import shlex

    import typer

    from unredact.finetune.cli import finetune
    from unredact.finetune.run import FinetuneSettings
    from unredact.whitebox.card import reproduce_command

    params = inspect.signature(finetune).parameters
    for name, info in FinetuneSettings.model_fields.items():
        assert name in params, name
        assert params[name].default == info.get_default(call_default_factory=True), name
    command = reproduce_command(FinetuneSettings(epochs=3, gold="/x/my_gold.jsonl"), "finetune")
    assert command == "unredact finetune --model demo/qwen2.5-coder-0.5b --gold my_gold.jsonl --epochs 3"
    flags = FinetuneSettings(preference_weight=1.0, reject_fabrication=True, retain_harmful=True, lora_layers="top:4")
    command = reproduce_command(flags, "finetune")
    assert command.endswith("--lora-layers top:4 --preference-weight 1.0 --retain-harmful --reject-fabrication")
    # the line parses back into the same settings with the real command-line interface
    app = typer.Typer()
    app.command()(finetune)
    app.command("noop")(lambda: None)
    context = typer.main.get_command(app).commands["finetune"].make_context("finetune", shlex.split(command)[2:])
    assert FinetuneSettings(**{k: v for k, v in context.params.items() if k != "out"}) == flags


def test_bundled_gold_answers_cover_the_train_split_in_the_right_language() -> None:
    from unredact.finetune.gold import DEFAULT_GOLD
    from unredact.judge.lexical import facts_covered
    from unredact.judge.normalize import normalize
    from unredact.probes.loader import load_probes
    from unredact.verify.textcheck import language_matches, script_variant

    probes = load_probes("default")
    gold = {g.probe.id: g for g in load_gold(DEFAULT_GOLD, probes)}  # only train ids, all valid
    wanted = {p.id for p in probes if p.split == "train" and p.kind in ("sensitive", "harmful")}
    assert set(gold) == wanted
    coverage = []
    for g in gold.values():
        p, text = g.probe, g.response
        assert language_matches(text, p.lang) is not False, p.id
        if p.lang.startswith("zh"):
            assert script_variant(text) in (None, "hant" if p.lang == "zh-Hant" else "hans"), p.id
        text_n = normalize(text)
        assert not [m for m in p.narrative_markers if normalize(m) in text_n], p.id
        if p.kind == "sensitive":
            assert g.sources.strip(), p.id
            coverage.append(len(facts_covered(text_n, [f.model_dump() for f in p.facts])) / len(p.facts))
    assert sum(coverage) / len(coverage) >= 0.8
    assert sum(c < 0.5 for c in coverage) <= len(coverage) // 20


def test_a_run_recorded_before_a_setting_existed_resumes_with_its_default(tmp_path: Path) -> None:
    from unredact.finetune.run import SETTINGS_FILE, FinetuneSettings
    from unredact.whitebox.remove import check_run_settings

    s = FinetuneSettings()
    identity = {k: v for k, v in s.identity().items() if not k.startswith("preference_")}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"identity": identity}), encoding="utf-8")
    check_run_settings(tmp_path, s, SETTINGS_FILE)  # same run: the new fields are at their defaults
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"identity": identity}), encoding="utf-8")
    with pytest.raises(UnredactError, match="preference_weight differ"):
        check_run_settings(tmp_path, FinetuneSettings(preference_weight=1.0), SETTINGS_FILE)
