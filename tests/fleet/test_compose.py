"""Structure of the container deployment: docker-compose.yml (and the bits of the Dockerfile it relies on).

No Docker engine is needed. The structural tests parse the file with PyYAML (which resolves the
anchors and ``<<`` merge keys the file uses); ``test_compose_cli_validates`` additionally runs the real
Compose CLI (``docker compose config -q``) when one is installed, and skips otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; cannot parse docker-compose.yml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

HF_CACHE = "/home/app/.cache/huggingface"
DEFAULT_PASSWORD_EXPR = "${POSTGRES_PASSWORD:-ticketfleet}"
COMMON_ENV = {
    "TICKETFLEET_DATABASE_URL": (
        f"postgresql+psycopg://ticketfleet:{DEFAULT_PASSWORD_EXPR}@postgres:5432/ticketfleet"
    ),
    "TICKETFLEET_REDIS_URL": "redis://redis:6379/0",
    "TICKETFLEET_MODEL": "${TICKETFLEET_MODEL:-Qwen/Qwen2.5-0.5B-Instruct}",
}
APP_SERVICES = ("migrate", "worker-gpu0", "worker-gpu1", "worker-chat", "beat")
GPU_WORKER = re.compile(r"^worker-gpu(\d+)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # "KEY=value" form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy") or {}
    return ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []


def _gpu_workers(services: dict[str, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    found = {int(m.group(1)): svc for name, svc in services.items() if (m := GPU_WORKER.match(name))}
    return dict(sorted(found.items()))


def _option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def test_services_present(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", "redis", *APP_SERVICES}
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"


def test_postgres_and_redis(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(map(str, pg["healthcheck"]["test"]))
    assert _env(pg)["POSTGRES_PASSWORD"] == DEFAULT_PASSWORD_EXPR
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])

    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = [str(c) for c in redis["command"]]
    assert _option(command, "--appendonly") == "yes", "queued Celery messages must survive a restart"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]

    # Named volumes are declared at top level (data must outlive the containers).
    for name in ("pgdata", "redisdata", "hf-cache"):
        assert name in (compose.get("volumes") or {})


def test_app_services_share_image_and_environment(services: dict[str, dict[str, Any]]) -> None:
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, f"all ticketfleet roles should run one image, got {images}"
    for name in APP_SERVICES:
        env = _env(services[name])
        for key, value in COMMON_ENV.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}"


def test_migrate_is_one_shot(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    # Quoted on purpose: a bare `no` is YAML 1.1 boolean false.
    assert migrate.get("restart") == "no"
    assert [str(c) for c in migrate["command"]] == ["db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert not _devices(migrate)


def test_workers_and_beat_wait_for_migration(services: dict[str, dict[str, Any]]) -> None:
    def role(svc: dict[str, Any]) -> str:
        return str((svc.get("command") or [""])[0])

    dependants = [name for name, svc in services.items() if role(svc) in ("worker", "beat")]
    assert {"worker-gpu0", "worker-gpu1", "worker-chat", "beat"} <= set(dependants)
    for name in dependants:
        deps = services[name].get("depends_on")
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions, not a plain list"
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert services[name].get("restart") != "no", f"{name} should be restarted"


def test_each_gpu_worker_reserves_exactly_its_gpu(services: dict[str, dict[str, Any]]) -> None:
    """worker-gpuN reserves host GPU N and nothing else.

    Inside the container the NVIDIA runtime exposes only the reserved GPU, and always as index 0; so
    the CUDA_VISIBLE_DEVICES that matches the reservation is "0" (and `--gpus 0`) for every worker.
    "N" would select a device that does not exist in the container and leave the worker without GPU.
    """
    workers = _gpu_workers(services)
    assert list(workers) == list(range(len(workers))) and len(workers) >= 2, sorted(workers)
    for n, svc in workers.items():
        devices = _devices(svc)
        assert len(devices) == 1, f"worker-gpu{n}: {devices}"
        (device,) = devices
        assert device.get("driver") == "nvidia"
        assert [str(d) for d in device.get("device_ids") or []] == [str(n)], f"worker-gpu{n}: {device}"
        assert "count" not in device, "count and device_ids are mutually exclusive"
        assert "gpu" in device.get("capabilities", [])

        assert _env(svc).get("CUDA_VISIBLE_DEVICES") == "0", f"worker-gpu{n}"
        command = [str(c) for c in svc["command"]]
        assert command[0] == "worker"
        assert _option(command, "--gpus") == "0", f"worker-gpu{n}: the one visible GPU is index 0"
        assert _option(command, "--lanes") == "tickets,backlog"
        assert any(str(v).endswith(f":{HF_CACHE}") for v in svc["volumes"]), f"worker-gpu{n}: HF cache"
        assert "HF_HUB_OFFLINE" in _env(svc) and "${HF_HUB_OFFLINE" in _env(svc)["HF_HUB_OFFLINE"]

    # No other service grabs a GPU (the chat lane is CPU-only, on purpose).
    gpu_names = {f"worker-gpu{n}" for n in workers}
    for name, svc in services.items():
        if name not in gpu_names:
            assert not _devices(svc), f"{name} must not reserve a GPU"


def test_chat_worker_is_cpu_only(services: dict[str, dict[str, Any]]) -> None:
    command = [str(c) for c in services["worker-chat"]["command"]]
    assert command[0] == "worker"
    assert _option(command, "--lanes") == "chat"
    assert _option(command, "--gpus") == "none"
    assert _option(command, "--concurrency") == "2"
    assert [str(c) for c in services["beat"]["command"]] == ["beat"]


def test_no_plaintext_secrets(compose: dict[str, Any]) -> None:
    """The only password in the file is the documented, overridable ``${POSTGRES_PASSWORD:-ticketfleet}``."""
    strings = _strings(compose)
    for s in strings:
        for userinfo in re.findall(r"://([^/@\s]+)@", s):
            assert ":" not in userinfo or userinfo.split(":", 1)[1] == DEFAULT_PASSWORD_EXPR, s
        for var, default in re.findall(r"\$\{(\w+):?-([^}]*)\}", s):
            if re.search(r"PASS|SECRET|TOKEN|KEY", var):
                assert (var, default) == ("POSTGRES_PASSWORD", "ticketfleet"), s
    secretish = re.compile(r"PASS|SECRET|TOKEN|API_KEY|PRIVATE_KEY")
    for name, svc in compose["services"].items():
        for key, value in _env(svc).items():
            if secretish.search(key):
                assert re.fullmatch(r"\$\{\w+(:?[-?][^}]*)?\}", value), f"{name}: {key} is a literal"


def test_dockerfile_fits_compose() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu124$", text, re.M)
    assert 'ENTRYPOINT ["ticketfleet"]' in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "image must not run as root"
    # The hf-cache volume is mounted on a directory the image creates for the app user.
    assert HF_CACHE in text


def _compose_cli() -> tuple[list[str] | None, str]:
    """The Compose v2+ CLI to validate with, or None and why not."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    if not candidates:
        return None, "neither `docker compose` nor `docker-compose` is installed"
    reasons = []
    for cli in candidates:
        try:
            out = subprocess.run([*cli, "version"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{' '.join(cli)}: {exc}")
            continue
        version = " ".join((out.stdout + out.stderr).split())[:160]
        if out.returncode != 0:
            reasons.append(f"{' '.join(cli)} version failed: {version}")
        elif re.search(r"version:? v?1\.", version, re.I):
            # Compose v1 is end-of-life and predates the Compose Specification (e.g. top-level `name`).
            reasons.append(f"{' '.join(cli)} is Compose v1 ({version})")
        else:
            return cli, version
    return None, "; ".join(reasons)


def test_compose_cli_validates(tmp_path: Path) -> None:
    cli, why = _compose_cli()
    if cli is None:
        pytest.skip(f"no Compose v2+ CLI to validate with: {why}")

    # Some wrappers swallow the exit status; make sure this one reports an invalid file as invalid.
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  a:\n    image: x\n    restart_policy_typo: 1\n", encoding="utf-8")
    probe = subprocess.run([*cli, "-f", str(bad), "config", "-q"], capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        pytest.skip(f"{' '.join(cli)} accepts an invalid file (exit status not propagated); cannot validate")

    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, (
        f"{' '.join(cli)} config -q failed ({why}):\n{result.stdout}{result.stderr}"
    )
