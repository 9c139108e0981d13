"""A tiny, random-weight Qwen2 model with the *real* Qwen2.5 tokenizer and chat template, built offline.

Tests need a model that behaves like the production one at the boundaries that matter (token ids,
special tokens, chat template, padding, eos handling) without downloading 1 GB of weights. The
weights are random, so outputs are meaningless but deterministic; everything around the weights is
Qwen2.5's.

The tokenizer is rebuilt from ``dashscope/resources/qwen.tiktoken`` (the 151,643 byte-level BPE ranks
Qwen2/2.5 use; dashscope ships it for offline token counting). tiktoken files only hold ranks, so
the merge list is recovered the way tiktoken's own BPE would rebuild each token: run rank-ordered BPE
on the token's bytes using only lower-ranked tokens; the two parts left at the end are its merge.
That yields exactly one merge per multi-byte token (151,387, the size of Qwen's ``merges.txt``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5's added tokens in id order, starting right after the 151,643 BPE ranks. The last eight are
# "added" but not "special" in Qwen's tokenizer_config.json (they survive skip_special_tokens).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_NON_SPECIAL_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
FIRST_ADDED_TOKEN_ID = 151643

# The chat template of Qwen/Qwen2.5-*-Instruct (tokenizer_config.json), verbatim.
QWEN25_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""  # noqa: E501

# Shape of the tiny model. vocab_size is Qwen2.5's padded embedding size (151,936 > 151,665 tokens).
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "rms_norm_eps": 1e-6,
}
# Qwen2.5-Instruct's shipped generation_config: sampling by default, so tests notice if the engine
# forgets to force greedy decoding.
TINY_GENERATION_CONFIG: dict[str, Any] = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "repetition_penalty": 1.05,
}
SEED = 1234
BUILDER_VERSION = "1"
_DONE_MARKER = ".tiny-qwen-complete"


def qwen_tiktoken_path() -> Path:
    """Location of ``qwen.tiktoken`` inside the installed dashscope package (found without importing it)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dashscope is not installed; it ships qwen.tiktoken (pip install dashscope)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "resources" / "qwen.tiktoken"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("dashscope is installed but resources/qwen.tiktoken is missing")


def load_bpe_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken rank file: one ``base64(token) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _last_merge(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair BPE merges last to produce ``token``, using only tokens ranked below it."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best_rank: int | None = None
        best_index = -1
        for index in range(len(parts) - 1):
            merged_rank = ranks.get(parts[index] + parts[index + 1])
            if (
                merged_rank is not None
                and merged_rank < rank
                and (best_rank is None or merged_rank < best_rank)
            ):
                best_rank, best_index = merged_rank, index
        if best_rank is None:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built from lower-ranked tokens")
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    return parts[0], parts[1]


def build_qwen_tokenizer_object(ranks: dict[bytes, int]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equivalent to Qwen2.5's ``tokenizer.json``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_encoder = bytes_to_unicode()

    def as_unicode(token: bytes) -> str:
        return "".join(byte_encoder[b] for b in token)

    vocab = {as_unicode(token): rank for token, rank in ranks.items()}
    merges: list[tuple[str, str]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _last_merge(token, rank, ranks)
            merges.append((as_unicode(left), as_unicode(right)))
    tokenizer = Tokenizer(
        BPE(
            vocab,
            merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Added one at a time, in order, so each lands on Qwen's id (151643, 151644, ...).
    for content in QWEN_SPECIAL_TOKENS:
        tokenizer.add_special_tokens([AddedToken(content, special=True, normalized=False)])
    for content in QWEN_NON_SPECIAL_ADDED_TOKENS:
        tokenizer.add_tokens([AddedToken(content, special=False, normalized=False)])
    expected = FIRST_ADDED_TOKEN_ID + len(QWEN_SPECIAL_TOKENS) + len(QWEN_NON_SPECIAL_ADDED_TOKENS)
    if tokenizer.get_vocab_size(with_added_tokens=True) != expected:
        raise RuntimeError("qwen.tiktoken does not have the expected 151,643 ranks")
    return tokenizer


def _content_version(tied: bool = True) -> str:
    """Cache key: changes whenever anything that shapes the written files changes."""
    import tokenizers
    import transformers

    payload = json.dumps(
        {
            "builder": BUILDER_VERSION,
            "config": {**TINY_CONFIG, "tie_word_embeddings": tied},
            "generation": TINY_GENERATION_CONFIG,
            "seed": SEED,
            "template": QWEN25_CHAT_TEMPLATE,
            "special": QWEN_SPECIAL_TOKENS + QWEN_NON_SPECIAL_ADDED_TOKENS,
            "regex": QWEN_PRETOKENIZE_REGEX,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _write_model(out_dir: Path, tied: bool = True) -> None:
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_qwen_tokenizer_object(load_bpe_ranks(qwen_tiktoken_path())),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
        errors="replace",
        split_special_tokens=False,
    )
    tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    config = Qwen2Config(**{**TINY_CONFIG, "tie_word_embeddings": tied})
    # fork_rng keeps the caller's global RNG untouched while making the weights a pure function of SEED.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(**TINY_GENERATION_CONFIG)
    model.save_pretrained(out_dir)


def build_tiny_qwen(target_dir: Path, *, tied: bool = True) -> Path:
    """Write (or reuse) a tiny Qwen2.5-shaped model under ``target_dir`` and return its directory.

    ``tied=True`` (tied input/output embeddings) makes a model that echoes its last input token, which
    the engine tests use to check padding and stop tokens. ``tied=False`` gives an untied random
    output layer whose greedy drafts are non-empty text: the fleet tests use it so drafts get stored.

    The directory name carries a content hash, so a cached build is reused across test sessions and
    rebuilt automatically when the recipe or the library versions change. The build happens in a
    temporary sibling directory that is renamed into place, so concurrent sessions never see a
    half-written model.
    """
    target_dir = Path(target_dir)
    model_dir = target_dir / f"tiny-qwen2.5-{'' if tied else 'untied-'}{_content_version(tied)}"
    if (model_dir / _DONE_MARKER).is_file():
        return model_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-qwen-", dir=target_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared by several users' runs
    try:
        _write_model(staging, tied)
        (staging / _DONE_MARKER).write_text(_content_version(tied) + "\n")
        try:
            os.replace(staging, model_dir)
        except OSError:
            # Another process finished first (rename onto a non-empty directory fails); use theirs.
            if not (model_dir / _DONE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def default_cache_dir() -> Path:
    """Where to keep built models: ``$TICKETFLEET_TEST_CACHE`` or a folder in the temp dir."""
    configured = os.environ.get("TICKETFLEET_TEST_CACHE")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "ticketfleet-test-models"
