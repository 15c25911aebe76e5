"""Removal search on tiny random models saved to disk: objectives, resumable search, export, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from tests.conftest import tiny_model, tiny_tokenizer  # noqa: E402
from unredact.backends.hf import HFBackend  # noqa: E402
from unredact.backends.registry import BackendOptions  # noqa: E402
from unredact.errors import UnredactError  # noqa: E402
from unredact.probes.schema import Probe  # noqa: E402
from unredact.rundir import run_lock  # noqa: E402
from unredact.whitebox.ablation import AblationDeltas  # noqa: E402
from unredact.whitebox.directions import DirectionSet  # noqa: E402
from unredact.whitebox.export import (  # noqa: E402
    adapter_tensors,
    check_reload,
    compare_logits,
    compare_with_adapter,
    export_adapter,
    export_model,
    model_logits,
)
from unredact.whitebox.objectives import (  # noqa: E402
    answer_logprobs,
    build_trie,
    chats_for,
    kl_first_tokens,
    opening_trie,
    pearson,
    proxy_agreement,
    refusal_opening_scores,
    roc_auc,
    teacher_forced_inputs,
)
from unredact.whitebox.search import (  # noqa: E402
    DEFAULT_PARAMS,
    JOURNAL,
    QUEUED_PARAMS,
    STUDY_NAME,
    AblationParams,
    completed,
    evaluate,
    pareto_candidates,
    prepare_search_data,
    run_search,
    suggest,
)

LANGS = ("en", "zh-Hans", "zh-Hant", "fr")
PROMPTS = ["What happened in 1989?", "Tell me about Tibet.", "Who is Liu Xiaobo?", "Hi"]


def save_tiny(path: Path, arch: str = "qwen2") -> Path:
    tok = tiny_tokenizer()
    tiny_model(arch, len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def load(path: Path) -> HFBackend:
    return HFBackend("hf", str(path), BackendOptions(dtype="float32", device="cpu", batch_size=8))


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> HFBackend:
    return load(save_tiny(tmp_path_factory.mktemp("tiny")))


def random_directions(backend: HFBackend, seed: int = 1) -> DirectionSet:
    cfg = backend.model.config
    g = torch.Generator().manual_seed(seed)
    c, r = (torch.randn(cfg.num_hidden_layers + 1, cfg.hidden_size, generator=g) for _ in range(2))
    return DirectionSet(
        censorship=c / c.norm(dim=-1, keepdim=True),
        refusal=r / r.norm(dim=-1, keepdim=True),
        model_id=backend.spec,
        n_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
    )


def make_probes(spec: dict[tuple[str, str], int]) -> list[Probe]:
    """``(kind, split) -> questions``; each question in all four languages (ASCII text: the tiny vocab)."""
    out = []
    for (kind, split), n in spec.items():
        for q in range(n):
            pair = f"{kind}-{split}-{q}"
            for lang in LANGS:
                facts = [{"name": "year", "forms": ["1989"]}] if kind in ("sensitive", "neutral") else []
                out.append(
                    Probe(
                        id=f"{pair}-{lang}",
                        pair_id=pair,
                        topic=f"{kind}-topic-{q % 2}",
                        lang=lang,  # type: ignore[arg-type]
                        kind=kind,  # type: ignore[arg-type]
                        split=split,  # type: ignore[arg-type]
                        prompt=f"[{lang}] {kind} question {q} about {split} things?",
                        facts=facts,  # type: ignore[arg-type]
                    )
                )
    return out


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(model: torch.nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


# ---- objectives ---------------------------------------------------------------------------------


def test_trie_prunes_extensions_and_rejects_empty() -> None:
    trie = build_trie([[1, 2, 3], [1, 2], [4], [4, 5, 6], [7, 8, 9, 10]], depth=3)
    assert trie.leaves == {(1, 2), (4,), (7, 8, 9)}
    assert trie.children()[()] == [1, 4, 7] and trie.first_tokens == [1, 4, 7]
    with pytest.raises(UnredactError):
        build_trie([], depth=2)


def test_refusal_opening_score_matches_brute_force(backend: HFBackend) -> None:
    chats = chats_for(PROMPTS)
    trie = opening_trie(backend, depth=2)
    assert all(len(leaf) <= 2 for leaf in trie.leaves)
    scores = refusal_opening_scores(backend, chats, trie=trie, batch_size=3)
    assert scores.shape == (len(PROMPTS),) and scores.dtype == torch.float32
    assert bool(((scores >= 0) & (scores <= 1)).all())
    # brute force: P(a) P(b|a) from full forward passes, one leaf and one prompt at a time
    expected = torch.zeros(len(PROMPTS))
    with torch.no_grad():
        for i, chat in enumerate(chats):
            ids, _ = backend.encode_chats([chat])
            for leaf in trie.leaves:
                p, seq = 1.0, ids
                for token in leaf:
                    p *= float(backend.model(input_ids=seq).logits[0, -1].float().softmax(-1)[token])
                    seq = torch.cat([seq, torch.tensor([[token]])], dim=-1)
                expected[i] += p
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
    by_depth = [refusal_opening_scores(backend, chats, depth=d) for d in (1, 2, 3)]
    assert bool((by_depth[0] >= by_depth[1] - 1e-6).all()) and bool((by_depth[1] >= by_depth[2] - 1e-6).all())


def test_kl_first_tokens_zero_when_unedited_positive_when_edited(backend: HFBackend) -> None:
    langs = ["en", "zh-Hans", "fr", "en"]
    inputs = teacher_forced_inputs(backend, chats_for(PROMPTS), langs, k=4, batch_size=3)
    assert [b[0].shape[0] for b in inputs.batches] == [3, 1] and inputs.n == 4
    base = answer_logprobs(backend.model, inputs)
    assert base.shape == (4, 4, len(backend.tokenizer)) and base.dtype == torch.float32
    kl = kl_first_tokens(base, backend.model, inputs, k=4)
    assert kl == {"all": 0.0, "en": 0.0, "zh-Hans": 0.0, "fr": 0.0}
    deltas = AblationDeltas(backend.model)
    deltas.apply(random_directions(backend), [1.0, 1.0], [1.0, 1.0])
    try:
        edited = kl_first_tokens(base, backend.model, inputs, k=2)
    finally:
        deltas.reset()
    assert all(v > 0 for v in edited.values()) and set(edited) == set(kl)
    with pytest.raises(UnredactError):
        kl_first_tokens(base, backend.model, inputs, k=5)


def test_auc_and_correlation() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5 and roc_auc([0.1], [True]) is None
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    res = proxy_agreement([0.9, 0.8, 0.1, 0.2], ["refusal", "state_narrative", "candid", "candid"])
    assert res["refusal_or_deflection"]["auc"] == 1.0 and res["censored"]["positives"] == 2


# ---- search -------------------------------------------------------------------------------------


def test_params_kernels_and_apply(backend: HFBackend) -> None:
    params = AblationParams.from_params(DEFAULT_PARAMS)
    attn, mlp = params.kernels(2)
    assert len(attn) == len(mlp) == 2 and max(attn) <= params.attn_max
    assert params.direction_index(2) is None
    assert AblationParams.from_params({**DEFAULT_PARAMS, "direction": "global"}).direction_index(2) == 1.2
    assert "layers" in params.describe(2)


def search_data(backend: HFBackend) -> Any:
    probes = make_probes({("sensitive", "train"): 1, ("harmful", "train"): 1, ("harmless", "train"): 1})
    kind = {k: [p for p in probes if p.kind == k] for k in ("sensitive", "harmful", "harmless")}
    return prepare_search_data(backend, kind["sensitive"], kind["harmful"], kind["harmless"], kl_tokens=2, depth=2)


def test_search_runs_and_resumes_after_kill(backend: HFBackend, tmp_path: Path) -> None:
    directions, data = random_directions(backend), search_data(backend)
    deltas = AblationDeltas(backend.model)
    before = snapshot(backend.model)
    unedited = evaluate(backend, data)
    assert unedited.harm_loss == 0.0 and unedited.kl == 0.0 and unedited.censorship == data.base_censorship
    study = run_search(backend, deltas, directions, data, tmp_path, trials=3, seed=3)
    assert len(completed(study)) == 3 and same_weights(backend.model, before)
    assert [t.params for t in completed(study)] == list(QUEUED_PARAMS)  # the queued trials come first
    assert all(len(t.values) == 3 and t.user_attrs["scores"]["kl_by_lang"] for t in completed(study))

    def die(number: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C in the middle of a trial, with the edit applied

    with pytest.raises(KeyboardInterrupt):
        run_search(backend, deltas, directions, data, tmp_path, trials=6, seed=3, on_trial=die)
    assert same_weights(backend.model, before)
    # a hard kill: a trial left RUNNING in the journal
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    raw = optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(tmp_path / JOURNAL))))
    killed = raw.ask()
    suggest(killed)
    with (tmp_path / JOURNAL).open("a") as f:
        f.write('{"op_code": 5, "torn')  # the write in flight when the process died
    resumed = run_search(backend, deltas, directions, data, tmp_path, trials=6, seed=3)
    trials = resumed.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # one study, numbering continues
    done = completed(resumed)
    assert len(done) == 6 and same_weights(backend.model, before)
    keys = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(keys)) == len(keys)  # no duplicate trials
    assert json.dumps(killed.params, sort_keys=True) in keys  # the killed trial was run again
    assert len(pareto_candidates(resumed, 2)) == 2
    again = run_search(backend, deltas, directions, data, tmp_path, trials=6, seed=3)
    assert len(again.get_trials(deepcopy=False)) == len(trials)  # nothing left to do
    with pytest.raises(UnredactError, match="another search"):
        run_search(backend, deltas, directions, data, tmp_path, trials=6, seed=4)


def test_export_of_an_edit_reloads_with_equal_logits(backend: HFBackend, tmp_path: Path) -> None:
    deltas = AblationDeltas(backend.model)
    AblationParams.from_params({**DEFAULT_PARAMS, "width": 0.7}).apply(deltas, random_directions(backend))
    try:
        export_model(backend.model, backend.tokenizer, tmp_path / "model")
        ids, mask = backend.encode_chats(chats_for(PROMPTS))
        assert check_reload(tmp_path / "model", backend.model, ids, mask) == 0.0
    finally:
        deltas.reset()


def test_edit_as_a_peft_adapter_gives_the_edited_model(backend: HFBackend, tmp_path: Path) -> None:
    from peft import PeftModel

    model = backend.model
    ids, mask = backend.encode_chats(chats_for(PROMPTS))
    base = model_logits(model, ids, mask)
    deltas = AblationDeltas(model)
    directions = random_directions(backend)
    params = AblationParams.from_params({**DEFAULT_PARAMS, "width": 0.7, "norm_preserving": False})
    params.apply(deltas, directions)
    try:
        edited = model_logits(model, ids, mask)
        assert float((edited - base).abs().max()) > 1e-3  # the edit does change the model
        adapter = export_adapter(deltas.as_lora(), tmp_path / "adapter", base_model="tiny")
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        assert config["r"] == 1 and config["lora_alpha"] == 1 and config["base_model_name_or_path"] == "tiny"
        assert len(config["target_modules"]) == len(deltas.as_lora())  # only the edited weights
    finally:
        deltas.reset()
    check = compare_with_adapter(model, adapter, ids, mask, edited)
    assert check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0 and abs(check["mean_kl"]) < 1e-6
    off = compare_logits(edited, base, mask)  # the measure does see the edit
    assert off["max_abs_diff"] > 1e-3 and off["mean_kl"] > 0
    assert torch.equal(model_logits(model, ids, mask), base)  # the check leaves the original model behind
    # and a user loading it the usual way gets the edited model too
    fresh = PeftModel.from_pretrained(type(model).from_pretrained(backend.spec.removeprefix("hf/")), str(adapter))
    assert float((model_logits(fresh, ids, mask) - edited).abs().max()) < 1e-4
    with pytest.raises(UnredactError, match="no weight"):
        adapter_tensors({})
    with pytest.raises(UnredactError, match="stacked expert"):
        adapter_tensors({"model.layers.0.mlp.experts.down_proj": (torch.zeros(4, 1, 8), torch.zeros(32, 1))})


# ---- end to end ---------------------------------------------------------------------------------


def test_run_remove_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unredact.verify.run import VerifyOutcome
    from unredact.whitebox.remove import run_remove

    verified: list[Any] = []

    def fake_verify(vs: Any, out: Path) -> VerifyOutcome:  # verify itself is tested in test_verify.py
        verified.append((vs, out))
        return VerifyOutcome(out, True, [], 0.0)

    monkeypatch.setattr("unredact.verify.run.run_verify", fake_verify)

    spec = {
        ("sensitive", "train"): 2,
        ("control-sensitive", "train"): 1,
        ("harmful", "train"): 1,
        ("harmless", "train"): 1,
        ("sensitive", "dev"): 1,
        ("harmful", "dev"): 1,
        ("sensitive", "test"): 1,
        ("harmful", "test"): 1,
        ("control-sensitive", "test"): 1,
        ("neutral", "test"): 1,
        ("harmless", "test"): 1,
    }
    probe_file = tmp_path / "probes.jsonl"
    probe_file.write_text("".join(p.model_dump_json() + "\n" for p in make_probes(spec)), encoding="utf-8")
    model_dir = save_tiny(tmp_path / "tiny")
    out = tmp_path / "run"
    options: dict[str, Any] = dict(
        probes=str(probe_file),
        dtype="float32",
        device="cpu",
        eval_sensitive=4,
        eval_harmful=4,
        eval_other=4,
        max_new_tokens=6,
        confirm_max_new_tokens=4,
        search_sensitive=4,
        kl_prompts=2,
        kl_tokens=2,
        proxy_depth=2,
        candidates=2,
        judge="lexical",
        verify="smoke",
    )
    result = run_remove(f"hf/{model_dir}", out, trials=3, budget_minutes=5, **options)
    # the exported model is verified against the original, with the run's probes and profile
    (vs, vout), *_ = verified
    assert (vs.original, vs.modified, vs.profile, vs.probes) == (
        f"hf/{model_dir}",
        f"hf/{out / 'model'}",
        "smoke",
        str(probe_file),
    )
    assert vout == out / "verify" and result.verify_passed is True
    for name in ("directions.safetensors", JOURNAL, "MODEL_CARD.md", "reproduce.json", "selection.json"):
        assert (out / name).is_file(), name
    for run in ("baseline-dev", "baseline-test", f"edited-test-trial-{result.chosen_trial}"):
        assert (out / run / "report.json").is_file(), run
    assert (out / "model" / "config.json").is_file() and (out / "model" / "README.md").is_file()
    assert result.reload_max_abs_diff == 0.0
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "| en |" in card and "sensitive-topic-0" in card
    assert "Before / after" in card and "censorship ablated" in card
    record = json.loads((out / "reproduce.json").read_text(encoding="utf-8"))
    assert record["chosen"]["trial"] == result.chosen_trial and record["search"]["complete"] == 3
    validation = json.loads((out / "proxy_validation.json").read_text(encoding="utf-8"))
    assert validation["overall"]["n"] > 0
    # resume: everything is skipped, the same choice comes back
    again = run_remove(f"hf/{model_dir}", out, trials=3, budget_minutes=5, **options)
    assert again.chosen_trial == result.chosen_trial and again.after == result.after
    # --adapter on a finished run adds the PEFT adapter (or says why there is none) without redoing anything
    run_remove(f"hf/{model_dir}", out, trials=3, budget_minutes=5, adapter=True, **options)
    adapter = json.loads((out / "export.json").read_text(encoding="utf-8"))["adapter"]
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert adapter["note"] in card
    if result.params["norm_preserving"]:
        assert adapter["check"] is None and not (out / "adapter").exists()
    else:
        assert adapter["check"]["argmax_agreement"] == 1.0 and adapter["check"]["max_abs_diff"] < 1e-4
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(UnredactError, match="another run"):
        run_remove(f"hf/{model_dir}", out, trials=3, **{**options, "seed": 9})
    with run_lock(out), pytest.raises(UnredactError, match="in use by another unredact process"):
        run_remove(f"hf/{model_dir}", out, trials=3, budget_minutes=5, **options)  # a second writer


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from unredact.whitebox.cli import remove

    app = typer.Typer()
    app.command()(remove)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["remove", "--model", "mock/censor", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, UnredactError) and "local weights" in str(result.exception)
    result = CliRunner().invoke(app, ["remove", "--trials", "0", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, UnredactError) and "trials" in str(result.exception)
    result = CliRunner().invoke(app, ["remove", "--arch", "layerz=model.layers", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, UnredactError)
    assert str(result.exception) == (
        "invalid setting arch: unknown --arch key 'layerz': expected one of layers, attn_out, mlp_out, norm, embed"
    )
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_every_setting_is_a_cli_option_with_the_same_default() -> None:
    import inspect

    from unredact.whitebox.card import reproduce_command
    from unredact.whitebox.cli import remove
    from unredact.whitebox.remove import RemoveSettings

    params = inspect.signature(remove).parameters
    for name, info in RemoveSettings.model_fields.items():
        assert name in params, name
        default = params[name].default
        expected = info.get_default(call_default_factory=True)
        expected = ",".join(expected) if name == "kl_langs" else expected
        assert default == expected or (name == "audit_run" and default is None), name
    command = reproduce_command(RemoveSettings(trials=8, kl_langs=["en", "fr"], system_prompt="Be brief."))
    assert command.endswith('--system-prompt "Be brief." --trials 8 --kl-langs en,fr')


def test_censorship_target_line() -> None:
    from unredact.whitebox.card import censorship_target_line

    def ci(x: float) -> dict[str, Any]:
        return {"censorship_index": {"rate": x}}

    assert "**missed**" in censorship_target_line(ci(0.44), ci(0.38)) and "down 14%" in censorship_target_line(
        ci(0.44), ci(0.38)
    )
    assert "**met**" in censorship_target_line(ci(0.5), ci(0.05))
    assert "up 20%" in censorship_target_line(ci(0.5), ci(0.6))
    assert "n/a" in censorship_target_line(ci(0.0), ci(0.0))


def test_choice_prefers_eligible_then_the_smallest_constraint_shortfall() -> None:
    from unredact.whitebox.remove import Candidate, choose

    def cand(trial: int, censorship: float, kl: float, eligible: bool, shortfall: float = 0.0) -> Candidate:
        return Candidate(trial, {}, (0.1, 0.0, kl), {}, censorship, 0.0, eligible, [], shortfall)

    safe, bolder, best = cand(0, 0.30, 0.02, True), cand(1, 0.20, 0.03, True), cand(2, 0.20, 0.01, True)
    assert choose([safe, bolder, best]).trial == 2  # lowest censorship, then lowest KL
    # none eligible: one refusal short beats all refusals lost, however low the latter's censorship
    one_short, all_lost = cand(3, 0.125, 0.025, False, 0.058), cand(4, 0.04, 0.036, False, 0.225)
    assert choose([all_lost, one_short]).trial == 3
    assert choose([all_lost, one_short, safe]).trial == 0  # an eligible one always wins
    tie_a, tie_b = cand(5, 0.3, 0.02, False, 0.1), cand(6, 0.2, 0.02, False, 0.1)
    assert choose([tie_a, tie_b]).trial == 6  # equal shortfall: lower censorship
