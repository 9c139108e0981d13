"""Start-up cost of the producers, this checkout side by side with another one (e.g. an older commit).

A producer (the HTTP API, `ticketfleet import`) only stores rows and sends ids; it should not pay for
the model stack. This measures, in fresh interpreters, alternating between the two trees:

- ``serve``: what `ticketfleet serve` does before it listens — build the API app and its service
  (``create_app_from_env``: settings, the broker, the database engine), without serving;
- ``import``: a whole ``python -m ticketfleet.cli import`` of a one-line file onto the live lanes,
  against the PostgreSQL and Redis in TICKETFLEET_DATABASE_URL / TICKETFLEET_REDIS_URL;

and reports, per tree, the median wall time and whether torch was imported.

    git worktree add /tmp/baseline <commit>
    python bench/startup.py --baseline /tmp/baseline --repeats 7

Both trees run with this interpreter; each tree's own code comes first on sys.path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

SERVE_PROBE = """
import sys
from ticketfleet.api.app import create_app_from_env
create_app_from_env()
print("torch" in sys.modules)
"""
IMPORT_PROBE = """
import runpy, sys
sys.argv = ["ticketfleet", "import", sys.argv[1], "--source", "startup-bench", "--lane", "live"]
try:
    runpy.run_module("ticketfleet.cli", run_name="__main__")
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
print("torch" in sys.modules)
"""


def run_once(tree: Path, probe: str, *args: str) -> tuple[float, bool]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: probe failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout to compare with")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for name in ("TICKETFLEET_DATABASE_URL", "TICKETFLEET_REDIS_URL", "TICKETFLEET_PII_KEY"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} must be set (a throwaway PII key: `ticketfleet pii keygen`)")
    trees = {"this": HERE, "baseline": args.baseline.resolve()}
    line = json.dumps({"external_id": "startup-1", "text": "Where is my parcel?"}) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "one.jsonl"
        sample.write_text(line, encoding="utf-8")
        results: dict[str, dict[str, list[float]]] = {t: {"serve": [], "import": []} for t in trees}
        torch_seen: dict[tuple[str, str], bool] = {}
        probes: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("serve", SERVE_PROBE, ()),
            ("import", IMPORT_PROBE, (str(sample),)),
        )
        for _ in range(args.repeats):
            for tree_name, tree in trees.items():  # alternate: both see the same machine load
                for probe_name, probe, extra in probes:
                    seconds, torch = run_once(tree, probe, *extra)
                    results[tree_name][probe_name].append(seconds)
                    torch_seen[(tree_name, probe_name)] = torch
    print(f"{'probe':8} {'tree':9} {'median s':>9} {'min–max s':>13} {'torch':>6}")
    for probe_name in ("serve", "import"):
        for tree_name in trees:
            times = results[tree_name][probe_name]
            loaded = "yes" if torch_seen[(tree_name, probe_name)] else "no"
            print(
                f"{probe_name:8} {tree_name:9} {statistics.median(times):9.2f} "
                f"{min(times):6.2f}–{max(times):<6.2f} {loaded:>6}"
            )
        ratio = statistics.median(results["baseline"][probe_name]) / statistics.median(
            results["this"][probe_name]
        )
        print(f"{probe_name:8} baseline / this = {ratio:.2f}x")


if __name__ == "__main__":
    main()
