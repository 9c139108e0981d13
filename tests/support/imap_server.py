"""A real Dovecot IMAP server for the tests, started from a throwaway configuration.

``DovecotServer`` writes a ``dovecot.conf`` into a temporary directory (loopback listener on a free port,
plaintext auth, a passwd-file of users, maildirs under the same directory, Drafts and Sent created on
first login), runs ``dovecot -F -c CONF`` as a child process, waits for the IMAP greeting, and stops it
afterwards. Each test gets a fresh account (``new_account``): Dovecot reads a user's passwd-file when it
appears (one passwd-file per user), so one server serves a whole module while every test starts with
empty mailboxes.

Dovecot comes from Debian's ``dovecot-imapd`` (``scripts/ci-dovecot.sh``). Without it the tests skip with
the reason, except in CI (``CI=true``), where a missing server must fail loudly.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DOVECOT_CANDIDATES = ("dovecot", "/usr/sbin/dovecot")


def find_dovecot() -> str | None:
    for candidate in DOVECOT_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require_dovecot() -> str:
    """The dovecot binary; skip the test without it, or fail when running in CI."""
    found = find_dovecot()
    if found is None:
        reason = "dovecot is not installed (bash scripts/ci-dovecot.sh installs Debian's dovecot-imapd)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ImapAccount:
    host: str
    port: int
    username: str
    password: str
    home: Path

    def login(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        conn.login(self.username, self.password)
        return conn


CONFIG = """\
# Throwaway configuration written by tests/support/imap_server.py
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
instance_name = tf-dovecot-{port}
log_path = {base}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/users/%u
}}
userdb {{
  driver = passwd-file
  args = {base}/users/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
{login_chroot}
}}
# No auth penalty (2, 4, 8 s… per failed login from one IP): the bad-password tests would wait for it.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{anvil_chroot}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    auto = create
    special_use = \\Drafts
  }}
  mailbox Sent {{
    auto = create
    special_use = \\Sent
  }}
}}
"""


class DovecotServer:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = 0
        self.tls_port = 0
        self.cert: Path | None = None
        self.key: Path | None = None
        self.base = Path(tempfile.mkdtemp(prefix="tf-dovecot-"))
        self.process: subprocess.Popen[bytes] | None = None
        root = os.geteuid() == 0
        # As root, mail is owned by "nobody" (Dovecot refuses UID 0 for mail) and the temp dir must be
        # traversable by it; as a normal user everything runs as that user, without chroots.
        self._mail_user = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.geteuid())
        self._root = root
        os.chmod(self.base, 0o755)

    def _config(self) -> str:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return CONFIG.format(
            base=self.base,
            port=self.port,
            internal_user="dovecot" if self._root else me,
            login_user="dovenull" if self._root else me,
            login_chroot="" if self._root else "  chroot =",
            anvil_chroot="" if self._root else "  chroot =",
            tls_port=self.tls_port,
            ssl=f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{self.key}" if self.cert else "ssl = no",
        )

    def _make_certificate(self) -> None:
        # A self-signed certificate for 127.0.0.1, for the TLS and STARTTLS tests; without openssl the
        # server runs plain-only and those tests skip.
        openssl = shutil.which("openssl")
        if openssl is None:
            return
        cert, key = self.base / "cert.pem", self.base / "key.pem"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.cert, self.key = cert, key

    def start(self, attempts: int = 3) -> None:
        for name in ("run", "state", "homes", "users"):
            (self.base / name).mkdir(exist_ok=True)
        self._make_certificate()
        for attempt in range(attempts):
            self.port = _free_port()
            self.tls_port = 0
            while self.cert and self.tls_port in (0, self.port):
                self.tls_port = _free_port()
            (self.base / "dovecot.conf").write_text(self._config())
            log = (self.base / "stderr.log").open("ab")
            self.process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.base / "dovecot.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal to the test run's group never reaches it half-way
            )
            log.close()
            if self._wait_for_greeting(timeout=15):
                return
            self.stop()
            if attempt == attempts - 1:
                raise RuntimeError(f"dovecot did not greet on 127.0.0.1:{self.port}:\n{self.logs()}")

    def _wait_for_greeting(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False  # exited: bad config or the port was taken between probe and bind
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(256).startswith(b"* OK"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def logs(self) -> str:
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.base / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def new_account(self) -> ImapAccount:
        username = f"u{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        home = self.base / "homes" / username
        home.mkdir(parents=True)
        os.chown(home, self._mail_user.pw_uid, self._mail_user.pw_gid)
        line = f"{username}:{{PLAIN}}{password}:{self._mail_user.pw_uid}:{self._mail_user.pw_gid}::{home}\n"
        # One passwd-file per user (the path has %u): a new file is read at once, whereas an edited
        # shared file is re-read only when Dovecot notices its mtime change, at most once a second.
        (self.base / "users" / username).write_text(line)
        return ImapAccount(self.host, self.port, username, password, home)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer(require_dovecot())
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
