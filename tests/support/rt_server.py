"""A real Request Tracker 5 for the tests: Debian's ``request-tracker5`` on a throwaway SQLite database.

``scripts/ci-rt.sh`` installs the packages. Each test session gets a server of its own (no root needed):

* a site config in a temporary directory (``RT_SITE_CONFIG`` / ``RT_SITE_CONFIG_DIR``, so the Debian
  files in /etc/request-tracker5 — which point at the packaged database — are never read);
* a fresh SQLite database made by ``rt-setup-database`` (about a second), plus the rights an e-mail
  customer needs (RT 5.0's REST 2.0 has no ACL endpoint, so they go in as initialdata);
* ``rt-server --port N`` on a free port, stopped (process group) at the end;
* outgoing mail (auto-replies) kept in a temporary file by RT's ``testfile`` mailer, never sent;
* Mason's compiled templates and web sessions in the temporary directory, shared with nothing.

What the connector needs (a queue, the custom fields it writes labels to) is created through the
REST API by :func:`provision`, as an administrator would. When RT is not installed the fixture skips
with the reason — except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

RT_SERVER = Path("/usr/share/request-tracker5/libexec/rt-server")
RT_LIB = Path("/usr/share/request-tracker5/lib")
SETUP_DATABASE = "rt-setup-database-5"
ROOT_USER = "root"
ROOT_PASSWORD = "password"  # what a fresh RT database answers to
QUEUE = "Ticketfleet"
# Label name (the connector's option key) -> RT custom field name.
CUSTOM_FIELDS = {
    "language": "TF Language",
    "sentiment": "TF Sentiment",
    "intent": "TF Intent",
    "priority": "TF Priority",
}

# API users with exactly the rights docs/connectors-rt.md lists (BOT_USER), and the same minus
# ModifyCustomField (NO_CF_USER) — the tests check that the documented rights are enough.
BOT_USER = "tf-bot"
NO_CF_USER = "tf-bot-nocf"
BOT_PASSWORD = "tf-bot-password"
BOT_RIGHTS = [
    "SeeQueue",
    "ShowTicket",
    "ShowTicketComments",
    "CommentOnTicket",
    "SeeCustomField",
    "ModifyCustomField",
]
_NO_CF_RIGHTS = [right for right in BOT_RIGHTS if right != "ModifyCustomField"]


def _perl_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


# Rights for customers writing in by e-mail (the mail gateway acts as the sender; RT grants none by
# default), and the API users above.
INITIALDATA = f"""\
@Users = (
    {{ Name => '{BOT_USER}', Password => '{BOT_PASSWORD}', Privileged => 1,
       EmailAddress => '{BOT_USER}@example.com' }},
    {{ Name => '{NO_CF_USER}', Password => '{BOT_PASSWORD}', Privileged => 1,
       EmailAddress => '{NO_CF_USER}@example.com' }},
);
@ACL = (
    {{ GroupDomain => 'SystemInternal', GroupType => 'Everyone', Right => 'CreateTicket' }},
    {{ GroupDomain => 'SystemInternal', GroupType => 'Everyone', Right => 'ReplyToTicket' }},
    {{ UserId => '{BOT_USER}', Right => {_perl_list(BOT_RIGHTS)} }},
    {{ UserId => '{NO_CF_USER}', Right => {_perl_list(_NO_CF_RIGHTS)} }},
);
1;
"""

# Prints "<id>-<token>" — the string for ``Authorization: token …`` — for a new token owned by root.
MAKE_TOKEN = """
use strict; use warnings;
use RT; RT::LoadConfig(); RT::Init();
my $user = RT::User->new(RT->SystemUser); $user->Load('root');
my $token = RT::AuthToken->new(RT::CurrentUser->new($user));
my ($ok, $msg, $auth) = $token->Create(Owner => $user->Id, Description => 'ticketfleet tests');
die "token: $msg\\n" unless $ok;
print $auth;
"""


class RtUnavailable(RuntimeError):
    """RT is not installed here, or would not start."""


def rt_installed() -> str | None:
    """None when RT can run here, else why not."""
    if not RT_SERVER.exists():
        return f"{RT_SERVER} not found (install with: bash scripts/ci-rt.sh)"
    if shutil.which(SETUP_DATABASE) is None:
        return f"{SETUP_DATABASE} not on PATH (install with: bash scripts/ci-rt.sh)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RtServer:
    """One running RT. ``base_url`` is the web root; the REST API lives under ``base_url + /REST/2.0/``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/REST/2.0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "rt-server.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RT_SITE_CONFIG": str(self.workdir / "RT_SiteConfig.pm"),
            # Also replaces /etc/request-tracker5/RT_SiteConfig.d, whose dbconfig file names another database.
            "RT_SITE_CONFIG_DIR": str(self.workdir / "RT_SiteConfig.d"),
        }

    def write_config(self) -> None:
        for directory in ("RT_SiteConfig.d", "mason_data", "session_data"):
            (self.workdir / directory).mkdir(parents=True, exist_ok=True)
        database = self.workdir / "rt.sqlite"
        (self.workdir / "RT_SiteConfig.pm").write_text(
            f"""\
Set($rtname, 'ticketfleet-test');
Set($Organization, 'ticketfleet.invalid');
Set($CorrespondAddress, 'rt@ticketfleet.invalid');
Set($CommentAddress, 'rt-comment@ticketfleet.invalid');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {self.port});
Set($WebPath, '');
Set($Timezone, 'UTC');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{database}');
Set($MailCommand, 'testfile');
Set($LogToSTDERR, 'warning');
Set($LogToSyslog, undef);
Set($LogToFile, undef);
# Compiled templates and web sessions in the temp dir too: nothing shared with other servers, no root needed.
$RT::MasonDataDir = '{self.workdir / "mason_data"}';
$RT::MasonSessionDir = '{self.workdir / "session_data"}';
1;
"""
        )

    def run_setup(self, *args: str) -> None:
        result = subprocess.run(
            [SETUP_DATABASE, *args],
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise RtUnavailable(
                f"{SETUP_DATABASE} {' '.join(args)} failed: "
                f"{result.stdout.decode(errors='replace')[-800:]}{result.stderr.decode(errors='replace')[-800:]}"
            )

    def create_database(self) -> None:
        self.run_setup("--action", "init", "--skip-create")
        rights = self.workdir / "initialdata-rights.pl"
        rights.write_text(INITIALDATA)
        self.run_setup("--action", "insert", "--datafile", str(rights))

    def make_token(self) -> str:
        result = subprocess.run(
            ["perl", f"-I{RT_LIB}", "-e", MAKE_TOKEN],
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            timeout=120,
        )
        if result.returncode != 0 or not result.stdout.strip():
            raise RtUnavailable(
                f"could not create an auth token: {result.stderr.decode(errors='replace')[-800:]}"
            )
        return result.stdout.decode().strip()

    def start(self, *, timeout: float = 90.0) -> None:
        self.write_config()
        self.create_database()
        self.token = self.make_token()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(RT_SERVER), "--port", str(self.port)],
                env=self.env(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the workers it forks too
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RtUnavailable(f"rt-server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                response = httpx.get(f"{self.api_url}/rt", auth=(ROOT_USER, ROOT_PASSWORD), timeout=5)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.25)
        self.stop()
        raise RtUnavailable(f"RT did not answer /REST/2.0/rt within {timeout}s ({last}): {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def admin_client(self) -> httpx.Client:
        """An httpx client logged in as root, for provisioning and for the tests' own look-ups."""
        return httpx.Client(base_url=self.api_url, auth=(ROOT_USER, ROOT_PASSWORD), timeout=30)


def provision(server: RtServer) -> None:
    """What an RT administrator sets up for ticketfleet: a queue, and the custom fields labels go to
    (global here, so the per-test queues of tests/support/rt_harness.py have them too)."""
    with server.admin_client() as client:
        created = client.post("/queue", json={"Name": QUEUE, "Description": "ticketfleet tests"})
        created.raise_for_status()
        for name in CUSTOM_FIELDS.values():
            response = client.post(
                "/customfield",
                json={
                    "Name": name,
                    "Type": "Freeform",
                    "MaxValues": 1,
                    "LookupType": "RT::Queue-RT::Ticket",
                    # 0: applied to every queue (the tests make a queue per test); a name applies it to one.
                    "Queue": 0,
                },
            )
            response.raise_for_status()


def unavailable(reason: str) -> None:
    """Skip outside CI; fail loudly in CI, where RT must be there (scripts/ci-rt.sh installs it)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Request Tracker is required in CI: {reason}", pytrace=False)
    pytest.skip(f"Request Tracker not available: {reason}")


@pytest.fixture(scope="session")
def rt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtServer]:
    """A running RT 5 with the ticketfleet queue and custom fields; stopped at session end."""
    reason = rt_installed()
    if reason is not None:
        unavailable(reason)
    server = RtServer(tmp_path_factory.mktemp("rt"))
    try:
        server.start()
        provision(server)
    except RtUnavailable as exc:
        server.stop()
        # Installed but broken is a real failure everywhere, not a reason to skip.
        pytest.fail(f"Request Tracker is installed but would not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
