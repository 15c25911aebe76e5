"""Shared fixtures: tiny random chat models built in memory (no downloads)."""

from __future__ import annotations

import string

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():  # type: ignore[no-untyped-def]
    """A character-level tokenizer with a chat template and end-of-turn token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
    chars = [*list(string.printable[:95]), "\n", "é", "天", "安", "门"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + chars))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_model(arch: str, vocab_size: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=1,
    )
    config = Qwen2Config(**common) if arch == "qwen2" else LlamaConfig(**common)
    model = AutoModelForCausalLM.from_config(config)
    return model.eval()


@pytest.fixture(params=["qwen2", "llama"])
def tiny(request):  # type: ignore[no-untyped-def]
    tokenizer = tiny_tokenizer()
    return tiny_model(request.param, len(tokenizer)), tokenizer
