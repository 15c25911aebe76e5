"""White-box core on tiny random models built in memory: architectures, directions, ablation, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from unredact.errors import UnredactError  # noqa: E402
from unredact.whitebox.ablation import (  # noqa: E402
    AblationDeltas,
    ablate,
    ablate_norm_preserving,
    layer_weight_kernel,
    orthogonal_projection_delta,
)
from unredact.whitebox.arch import (  # noqa: E402
    arch_from_text,
    decoder_layers,
    embedding,
    final_norm,
    output_projections,
    parse_arch_override,
    residual_writers,
    resolve_arch,
)
from unredact.whitebox.directions import (  # noqa: E402
    DirectionSet,
    answer_start_hidden_states,
    compute_directions,
    last_token_hidden_states,
)
from unredact.whitebox.export import check_reload, export_model  # noqa: E402

N_LAYERS, HIDDEN, INTER, VOCAB = 4, 32, 64, 128
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=INTER,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
)
MOE = dict(moe_intermediate_size=16, shared_expert_intermediate_size=48, num_experts=4, num_experts_per_tok=2)

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 8}),
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {}),
    "gemma": ("GemmaConfig", {"head_dim": 8}),
    "gemma2": ("Gemma2Config", {"head_dim": 8}),
    "gemma3_text": ("Gemma3TextConfig", {"head_dim": 8}),
    "phi3": ("Phi3Config", {"pad_token_id": 0}),
    "olmo2": ("Olmo2Config", {"pad_token_id": 0}),
    "granite": ("GraniteConfig", {}),
    "qwen2_moe": ("Qwen2MoeConfig", MOE),
}


def tiny_model(kind: str = "qwen2", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "gemma3":
        config = transformers.Gemma3Config(
            text_config={**SMALL, "head_dim": 8},
            vision_config=dict(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
            ),
        )
        return transformers.Gemma3ForConditionalGeneration(config).eval()
    config_name, extra = CONFIGS[kind]
    config = getattr(transformers, config_name)(**SMALL, **extra)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def random_directions(seed: int = 1) -> DirectionSet:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(N_LAYERS + 1, HIDDEN, generator=g)
    r = torch.randn(N_LAYERS + 1, HIDDEN, generator=g)
    return DirectionSet(
        censorship=c / c.norm(dim=-1, keepdim=True),
        refusal=r / r.norm(dim=-1, keepdim=True),
        model_id="tiny",
        n_layers=N_LAYERS,
        hidden_size=HIDDEN,
    )


@torch.no_grad()
def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


# ---- pure tensor math ---------------------------------------------------------------------------


def test_delta_matches_closed_form() -> None:
    torch.manual_seed(0)
    W, v, w = torch.randn(12, 7), torch.randn(12), 0.7
    v_hat = v / v.norm()
    expected = -w * torch.outer(v_hat, v_hat) @ W
    torch.testing.assert_close(orthogonal_projection_delta(W, v, w), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ablate(W, v, w), W + expected, atol=1e-6, rtol=1e-5)
    stacked = torch.randn(3, 12, 7)  # stacked experts: each (out, in) slice edited independently
    delta = orthogonal_projection_delta(stacked, v, w)
    for e in range(3):
        torch.testing.assert_close(delta[e], -w * torch.outer(v_hat, v_hat) @ stacked[e], atol=1e-6, rtol=1e-5)
    assert torch.equal(orthogonal_projection_delta(W, torch.zeros(12), 1.0), torch.zeros_like(W))


def test_full_weight_removes_component_and_norm_preserving_keeps_columns() -> None:
    torch.manual_seed(1)
    W, v = torch.randn(16, 9), torch.randn(16)
    v_hat = v / v.norm()
    assert (v_hat @ ablate(W, v, 1.0)).abs().max() < 1e-5
    kept = ablate_norm_preserving(W, v, 1.0)
    torch.testing.assert_close(kept.norm(dim=0), W.norm(dim=0), atol=1e-5, rtol=1e-5)
    assert (v_hat @ kept).abs().max() < 1e-5
    half = ablate_norm_preserving(W, v, 0.5)
    torch.testing.assert_close(half.norm(dim=0), W.norm(dim=0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(half, W)


def test_bf16_ablation_keeps_dtype() -> None:
    W = torch.randn(8, 4).to(torch.bfloat16)
    assert ablate(W, torch.randn(8), 1.0).dtype == torch.bfloat16
    assert ablate_norm_preserving(W, torch.randn(8), 1.0).dtype == torch.bfloat16


def test_layer_weight_kernel() -> None:
    w = layer_weight_kernel(8, peak=3.0, width=2.0, min_w=0.2, max_w=1.0)
    assert w[3] == pytest.approx(1.0)
    assert w[2] == pytest.approx(0.6) and w[4] == pytest.approx(0.6)
    assert w[1] == pytest.approx(0.2) and w[5] == pytest.approx(0.2)  # edges: distance == width
    assert w[0] == 0.0 and w[6] == 0.0 and w[7] == 0.0  # beyond width
    frac = layer_weight_kernel(8, peak=3.5, width=2.0, min_w=0.2, max_w=1.0)
    assert frac[3] == pytest.approx(0.8) and frac[4] == pytest.approx(0.8)
    assert frac[2] == pytest.approx(0.4) and frac[1] == 0.0
    with pytest.raises(ValueError):
        layer_weight_kernel(8, 3.0, 0.0, 0.1, 1.0)


# ---- architectures ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*CONFIGS, "gemma3"])
def test_architecture_discovery(kind: str) -> None:
    model = tiny_model(kind)
    spec = resolve_arch(model)
    layers = decoder_layers(model, spec)
    assert embedding(model, spec) is model.get_input_embeddings()
    assert isinstance(final_norm(model, spec), nn.Module)
    assert len(layers) == N_LAYERS
    for idx in (0, N_LAYERS - 1):
        projections = output_projections(model, idx, spec)
        assert isinstance(projections["attn"], nn.Linear)
        assert projections["attn"].out_features == HIDDEN
        for name, module in projections.items():
            assert isinstance(module, nn.Linear) and module.weight.shape[0] == HIDDEN, name
        if kind != "qwen2_moe":
            assert set(projections) == {"attn", "mlp"}
            assert projections["mlp"].weight.shape == (HIDDEN, INTER)
        writers = residual_writers(model, idx, spec)
        for full, param in writers.values():
            assert param.shape[-2] == HIDDEN
            assert model.get_parameter(full) is param
    if kind == "qwen2_moe":
        _, experts = residual_writers(model, 0, spec)["mlp.experts"]
        assert experts.shape == (4, HIDDEN, 16)  # every expert's down_proj, stacked


def test_unknown_model_type_and_override() -> None:
    model = tiny_model("qwen2")
    model.config.model_type = "mystery"
    with pytest.raises(UnredactError, match=r"mystery.*--arch layers="):
        resolve_arch(model)
    override = parse_arch_override("layers=model.layers, attn_out=self_attn.o_proj, mlp_out=mlp.down_proj")
    assert override == {
        "layers": "model.layers",
        "attn_out": "self_attn.o_proj",
        "mlp_out": ["mlp.down_proj"],
    }
    spec = resolve_arch(model, override)
    assert spec.writers == {"attn": "self_attn.o_proj", "mlp": "mlp.down_proj"}
    assert len(decoder_layers(model, spec)) == N_LAYERS
    with pytest.raises(UnredactError, match="needs"):
        resolve_arch(model, {"layers": "model.layers"})
    with pytest.raises(UnredactError, match="not a Linear"):
        resolve_arch(model, {**override, "attn_out": "self_attn.nope"})
    with pytest.raises(UnredactError, match="ModuleList"):
        resolve_arch(model, {**override, "layers": "model.norm"})
    # what `remove --arch` does with the option's text: the edit then reaches every writer
    with pytest.raises(UnredactError, match="unsupported model_type 'mystery'"):
        arch_from_text(model, None)
    deltas = AblationDeltas(
        model, arch_from_text(model, "layers=model.layers,attn_out=self_attn.o_proj,mlp_out=mlp.down_proj")
    )
    assert len(deltas.target_names()) == 2 * N_LAYERS
    assert deltas.target_names()[:2] == [
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ]


def test_parse_arch_override() -> None:
    parsed = parse_arch_override("layers=model.layers,mlp_out=mlp.shared_expert.down_proj+mlp.experts.down_proj")
    assert parsed["mlp_out"] == ["mlp.shared_expert.down_proj", "mlp.experts.down_proj"]
    with pytest.raises(UnredactError, match="unknown --arch key"):
        parse_arch_override("layerz=model.layers")
    with pytest.raises(UnredactError, match="key=value"):
        parse_arch_override("layers")
    with pytest.raises(UnredactError, match="twice"):
        parse_arch_override("layers=a,layers=b")
    moe = tiny_model("qwen2_moe")
    spec = resolve_arch(moe, parse_arch_override("mlp_out=mlp.shared_expert.down_proj"))
    assert spec.writers == {"attn": "self_attn.o_proj", "mlp": "mlp.shared_expert.down_proj"}


# ---- ablation deltas on models ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_moe", "gemma2"])
def test_apply_reset_and_idempotence(kind: str) -> None:
    model = tiny_model(kind)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = logits_of(model, ids)
    deltas = AblationDeltas(model)
    directions = random_directions()
    ones = [1.0] * N_LAYERS
    deltas.apply(directions, ones, ones)
    assert deltas.is_applied
    once_state = {k: v.clone() for k, v in model.state_dict().items()}
    once = logits_of(model, ids)
    assert not torch.equal(once, before)
    for layer in range(N_LAYERS):  # full weight: no writer puts anything along v any more
        v = directions.for_layer(layer)
        for _, param in residual_writers(model, layer, deltas.arch).values():
            assert torch.einsum("o,...oi->...i", v, param).abs().max() < 1e-5
    deltas.apply(directions, ones, ones)  # twice == once (never stacks)
    assert all(torch.equal(once_state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits_of(model, ids), once)
    deltas.reset()
    assert not deltas.is_applied
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits_of(model, ids), before)


def test_global_direction_zero_weights_and_lora_factors() -> None:
    model = tiny_model("qwen2")
    originals = {k: v.clone() for k, v in model.state_dict().items()}
    deltas = AblationDeltas(model)
    directions = random_directions()
    attn = layer_weight_kernel(N_LAYERS, peak=1.0, width=1.0, min_w=0.5, max_w=1.0)  # [.5, 1, .5, 0]
    deltas.apply(directions, attn, [0.3] * N_LAYERS, direction_index=1.5)
    state = model.state_dict()
    assert torch.equal(
        state["model.layers.3.self_attn.o_proj.weight"], originals["model.layers.3.self_attn.o_proj.weight"]
    )
    factors = deltas.as_lora()
    assert "model.layers.3.self_attn.o_proj.weight" not in factors
    assert "model.layers.0.mlp.down_proj.weight" in factors
    v = directions.interpolated(1.5)
    for name, (a, b) in factors.items():
        assert a.shape[-2] == 1 and b.shape == (HIDDEN, 1)
        torch.testing.assert_close(originals[name] + b @ a, state[name], atol=1e-6, rtol=1e-5)
        assert torch.allclose(b[:, 0] / b[:, 0].norm(), -v, atol=1e-5)  # same global direction everywhere
    with pytest.raises(ValueError):
        deltas.as_lora(rank=2)
    deltas.apply(directions, attn, attn, norm_preserving=True)
    with pytest.raises(UnredactError, match="rank-1"):
        deltas.as_lora()
    with pytest.raises(UnredactError, match="entries"):
        deltas.apply(directions, [1.0], attn)
    deltas.reset()
    assert all(torch.equal(originals[k], v) for k, v in model.state_dict().items())


# ---- hidden states and directions ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["qwen2", "phi3"])
def test_last_token_hidden_states_left_padding(kind: str) -> None:
    model = tiny_model(kind)
    g = torch.Generator().manual_seed(3)
    short, long = torch.randint(1, VOCAB, (1, 5), generator=g), torch.randint(1, VOCAB, (1, 8), generator=g)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long], 0)
    mask = torch.cat([torch.cat([torch.zeros(1, 3), torch.ones(1, 5)], 1), torch.ones(1, 8)], 0).long()
    states = last_token_hidden_states(model, batch, mask)
    assert states.shape == (2, N_LAYERS + 1, HIDDEN) and states.dtype == torch.float32
    alone = last_token_hidden_states(model, short, torch.ones_like(short))
    torch.testing.assert_close(states[0], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(states[1], last_token_hidden_states(model, long)[0], atol=1e-5, rtol=1e-4)
    right_padded = torch.cat([torch.ones(1, 5), torch.zeros(1, 3)], 1).long()
    with pytest.raises(UnredactError, match="LEFT"):
        last_token_hidden_states(model, batch[:1], right_padded)


def test_answer_start_hidden_states_average_the_first_answer_tokens() -> None:
    model = tiny_model("qwen2")
    g = torch.Generator().manual_seed(5)
    short, long = torch.randint(1, VOCAB, (1, 5), generator=g), torch.randint(1, VOCAB, (1, 8), generator=g)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long], 0)
    mask = torch.cat([torch.cat([torch.zeros(1, 3), torch.ones(1, 5)], 1), torch.ones(1, 8)], 0).long()
    assert torch.equal(answer_start_hidden_states(model, batch, mask, 0), last_token_hidden_states(model, batch, mask))

    def by_hand(prompt: torch.Tensor, k: int, eos: set[int]) -> torch.Tensor:
        """Greedy continuation of one unpadded prompt, then the mean over its last prompt token onward."""
        ids = prompt
        for _ in range(k):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
            if token in eos:
                break
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        n = ids.shape[1] - prompt.shape[1] + 1
        return torch.stack([h[0, -n:].mean(0) for h in hidden])

    with torch.no_grad():
        states = answer_start_hidden_states(model, batch, mask, 3)
        assert states.shape == (2, N_LAYERS + 1, HIDDEN)
        torch.testing.assert_close(states[0], by_hand(short, 3, set()), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(states[1], by_hand(long, 3, set()), atol=1e-5, rtol=1e-4)
        # a row whose first answer token ends the answer averages two positions, not four
        first = int(model(input_ids=short).logits[0, -1].argmax())
        ended = answer_start_hidden_states(model, batch, mask, 3, eos_token_ids={first})
        torch.testing.assert_close(ended[0], by_hand(short, 3, {first}), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(ended[0], states[0])
    with pytest.raises(UnredactError, match="response_tokens"):
        answer_start_hidden_states(model, batch, mask, -1)


def synthetic_states(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N_LAYERS + 1, HIDDEN, generator=g) * 3
    refusal = torch.randn(N_LAYERS + 1, HIDDEN, generator=g)
    censor = torch.randn(N_LAYERS + 1, HIDDEN, generator=g) + 0.5 * refusal  # deliberately overlaps

    def sample(n: int, shift: torch.Tensor) -> torch.Tensor:
        return base + shift + 0.3 * torch.randn(n, N_LAYERS + 1, HIDDEN, generator=g)

    zero = torch.zeros(N_LAYERS + 1, HIDDEN)
    return {
        "sensitive": sample(12, censor + 0.7 * refusal),
        "control": sample(10, zero),
        "harmful": sample(11, refusal),
        "harmless": sample(9, zero),
    }


def test_compute_directions_properties_and_round_trip(tmp_path: Path) -> None:
    states = synthetic_states()
    ds = compute_directions(**states, model_id="tiny/qwen2", prompt_hashes={"sensitive": "abc"}, meta={"seed": 0})
    assert ds.censorship.shape == (N_LAYERS + 1, HIDDEN) and ds.n_layers == N_LAYERS
    torch.testing.assert_close(ds.censorship.norm(dim=-1), torch.ones(N_LAYERS + 1))
    torch.testing.assert_close(ds.refusal.norm(dim=-1), torch.ones(N_LAYERS + 1))
    assert (ds.censorship * ds.refusal).sum(-1).abs().max() < 1e-5
    harmless_mean = states["harmless"].mean(0)
    harmless_unit = harmless_mean / harmless_mean.norm(dim=-1, keepdim=True)
    assert (ds.censorship * harmless_unit).sum(-1).abs().max() < 1e-5
    assert ds.meta["counts"]["sensitive"] == 12 and ds.meta["degenerate_layers"] == []

    path = ds.save(tmp_path / "run" / "directions.safetensors")
    loaded = DirectionSet.load(path)
    assert torch.equal(loaded.censorship, ds.censorship) and torch.equal(loaded.refusal, ds.refusal)
    assert (loaded.model_id, loaded.n_layers, loaded.hidden_size) == ("tiny/qwen2", N_LAYERS, HIDDEN)
    assert loaded.prompt_hashes == {"sensitive": "abc"} and loaded.meta["seed"] == 0

    torch.testing.assert_close(ds.interpolated(2.0), ds.censorship[2])
    mid = ds.interpolated(2.5)
    expected = ds.censorship[2] + ds.censorship[3]
    torch.testing.assert_close(mid, expected / expected.norm())
    torch.testing.assert_close(ds.interpolated(float(N_LAYERS)), ds.censorship[N_LAYERS])
    with pytest.raises(UnredactError):
        ds.interpolated(N_LAYERS + 0.5)


def test_refusal_mix_turns_the_censorship_direction_toward_refusal() -> None:
    ds = compute_directions(**synthetic_states())
    assert ds.mixed(0.0) is ds
    torch.testing.assert_close(ds.mixed(1.0).censorship, ds.refusal)
    half = ds.mixed(0.5).censorship
    torch.testing.assert_close(half.norm(dim=-1), torch.ones(N_LAYERS + 1))
    # c and r are orthonormal, so the half mix sits at 45 degrees from both
    torch.testing.assert_close((half * ds.censorship).sum(-1), torch.full((N_LAYERS + 1,), 0.5**0.5))
    torch.testing.assert_close((half * ds.refusal).sum(-1), torch.full((N_LAYERS + 1,), 0.5**0.5))
    with pytest.raises(UnredactError):
        ds.mixed(1.5)


def test_degenerate_layer_and_bad_files(tmp_path: Path) -> None:
    states = synthetic_states(1)
    shared = torch.randn(HIDDEN)
    for t in states.values():
        t[:, 0, :] = shared  # embedding of one shared last token: no direction there
    ds = compute_directions(**states)
    assert ds.meta["degenerate_layers"] == [0] and float(ds.censorship[0].norm()) == 0.0

    bad = tmp_path / "bad.safetensors"
    header = {
        "format": "unredact.directions/1",
        "model_id": "x",
        "n_layers": str(N_LAYERS + 2),
        "hidden_size": str(HIDDEN),
        "prompt_hashes": "{}",
        "meta": "{}",
    }
    tensors = {"censorship": torch.zeros(N_LAYERS + 1, HIDDEN), "refusal": torch.zeros(N_LAYERS + 1, HIDDEN)}
    save_file(tensors, str(bad), metadata=header)
    with pytest.raises(UnredactError, match="metadata says"):
        DirectionSet.load(bad)
    save_file(tensors, str(bad), metadata={"format": "other"})
    with pytest.raises(UnredactError, match="not an unredact direction file"):
        DirectionSet.load(bad)
    with pytest.raises(UnredactError, match="no direction file"):
        DirectionSet.load(tmp_path / "missing.safetensors")
    model = tiny_model("qwen2")
    wrong = DirectionSet(torch.zeros(3, HIDDEN), torch.zeros(3, HIDDEN), "x", 2, HIDDEN)
    with pytest.raises(UnredactError, match="directions are for 2 layers"):
        AblationDeltas(model).apply(wrong, [1.0] * N_LAYERS, [1.0] * N_LAYERS)


# ---- export -------------------------------------------------------------------------------------


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(VOCAB - 1)} | {"<unk>": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="t0")


def test_export_reload_and_atomicity(tmp_path: Path) -> None:
    model = tiny_model("qwen2")
    deltas = AblationDeltas(model)
    deltas.apply(random_directions(), [1.0] * N_LAYERS, [0.5] * N_LAYERS)
    out = tmp_path / "model"
    export_model(model, tiny_tokenizer(), out, max_shard_size="100KB", extra_files={"MODEL_CARD.md": "# tiny\n"})
    assert len(list(out.glob("*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    assert (out / "MODEL_CARD.md").read_text() == "# tiny\n" and (out / "tokenizer.json").is_file()
    assert not list(out.glob("*.bin"))
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(5))
    assert check_reload(out, model, ids) < 1e-5

    with pytest.raises(UnredactError, match="not empty"):
        export_model(model, None, out)
    assert (out / "MODEL_CARD.md").is_file()  # untouched by the refused export
    deltas.reset()
    export_model(model, None, out, extra_files={"NOTE.txt": "reset"}, overwrite=True)
    assert (out / "NOTE.txt").is_file() and not (out / "MODEL_CARD.md").exists()
    assert check_reload(out, model, ids) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary or old dirs left
    with pytest.raises(UnredactError, match="plain file name"):
        export_model(model, None, tmp_path / "other", extra_files={"../x": "no"})
    assert not (tmp_path / "other").exists()
