"""The tiny test model must look like Qwen2.5 from the outside: same token ids, specials and template."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from ticketfleet.testing.tiny_qwen import (
    QWEN_PRETOKENIZE_REGEX,
    build_tiny_qwen,
    load_bpe_ranks,
    qwen_tiktoken_path,
)

# tiny_qwen_dir, tiny_engine: the tiny Qwen2.5 model, built once per session.
pytest_plugins = ["tests.engine_fixtures"]

SAMPLES = [
    "Hello world",
    "Ich habe mein Passwort vergessen!!! Bestellung #12345 seit 3 Wochen unterwegs.\n\n",
    "注文した商品がまだ届いていません。返金してください。",
    "Ça ne marche pas, j'ai été débité deux fois (2 × 49,99 €).",
    "  leading spaces,\ttabs\r\nand windows newlines  ",
    "emoji 😀👍🏽 and code: def f(x): return x**2\n",
    "Пожалуйста, отмените мою подписку.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_qwen_dir, local_files_only=True)


def test_hello_world_has_the_real_qwen_ids(tokenizer: Any) -> None:
    assert tokenizer("Hello world")["input_ids"] == [9707, 1879]
    assert tokenizer.decode([9707, 1879]) == "Hello world"


def test_special_tokens_have_qwen_ids(tokenizer: Any) -> None:
    ids = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert ids == [151643, 151644, 151645]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 151645
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 151643
    assert tokenizer.convert_tokens_to_ids(["<tool_call>", "<|file_sep|>"]) == [151657, 151664]
    # Written in text, the control strings become single control tokens (as with the real tokenizer)...
    encoded = tokenizer("<|im_start|>user\nHello world<|im_end|>", add_special_tokens=False)["input_ids"]
    assert encoded[0] == 151644 and encoded[-1] == 151645 and encoded[-3:-1] == [9707, 1879]
    # ...and skip_special_tokens drops them on the way back.
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "user\nHello world"


def test_bpe_matches_tiktoken_on_mixed_text(tokenizer: Any) -> None:
    """The merges rebuilt from the rank file must tokenize exactly like tiktoken does with those ranks."""
    import tiktoken

    encoding = tiktoken.Encoding(
        "qwen",
        pat_str=QWEN_PRETOKENIZE_REGEX,
        mergeable_ranks=load_bpe_ranks(qwen_tiktoken_path()),
        special_tokens={},
    )
    for text in SAMPLES:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == encoding.encode(text), text
        assert tokenizer.decode(encoding.encode(text)) == text


def test_chat_template_renders_chatml(tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    default = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], tokenize=False
    )
    assert default == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    )


def test_chat_template_has_qwen_tool_section(tokenizer: Any) -> None:
    tool = {"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is my order?"}],
        tools=[tool],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert "# Tools" in rendered and '"name": "lookup_order"' in rendered and "<tool_call>" in rendered


def test_model_config_is_tiny_qwen2(tiny_qwen_dir: Path) -> None:
    config = json.loads((tiny_qwen_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (151936, 64, 2)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["tie_word_embeddings"] is True
    generation = json.loads((tiny_qwen_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [151645, 151643]


def test_build_is_cached(tiny_qwen_dir: Path) -> None:
    weights = tiny_qwen_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert build_tiny_qwen(tiny_qwen_dir.parent) == tiny_qwen_dir
    assert time.perf_counter() - started < 1.0
    assert weights.stat().st_mtime_ns == before
