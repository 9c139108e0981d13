"""Starting and stopping real `ticketfleet worker` processes for the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from db.models import ItemState, WorkItem
from db.session import transaction
from ticketfleet.cli.demo import worker_command

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerHandle:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass
class Fleet:
    env: dict[str, str]
    log_dir: Path
    workers: list[WorkerHandle] = field(default_factory=list)

    def start(
        self, lanes: str = "chat,tickets,backlog", *, beat: bool = False, **extra_env: str
    ) -> WorkerHandle:
        index = len(self.workers)
        log_path = self.log_dir / f"worker-{index}.log"
        cmd = worker_command(lanes, f"test{index}@%h", beat=beat)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so kill -9 takes the whole process group
            )
        handle = WorkerHandle(process, log_path)
        self.workers.append(handle)
        self._wait_ready(handle)
        return handle

    @staticmethod
    def _wait_ready(handle: WorkerHandle, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if " ready." in handle.log():
                return
            if handle.process.poll() is not None:
                raise RuntimeError(f"worker exited with {handle.process.returncode}:\n{handle.log()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout_s} s:\n{handle.log()[-3000:]}")

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


def worker_env(
    database_url: str, redis_url: str, model: str, data_dir: Path, **overrides: str
) -> dict[str, str]:
    """The environment of test workers: one thread, small batches, a quick reaper; ``overrides`` are
    further TICKETFLEET_ settings without the prefix (``MAX_NEW_TOKENS="4"``)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
        "TICKETFLEET_DATABASE_URL": database_url,
        "TICKETFLEET_REDIS_URL": redis_url,
        "TICKETFLEET_MODEL": model,
        "TICKETFLEET_BATCH_SIZE": "4",
        "TICKETFLEET_MAX_WAIT_MS": "20",
        "TICKETFLEET_REAPER_INTERVAL_SECONDS": "1",
        "TICKETFLEET_DATA_DIR": str(data_dir),
        **{f"TICKETFLEET_{name}": value for name, value in overrides.items()},
    }


def states(database_url: str) -> dict[str, int]:
    with transaction(database_url) as session:
        rows = session.execute(select(WorkItem.state, func.count()).group_by(WorkItem.state)).all()
    return {ItemState(s).value: int(n) for s, n in rows}


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
