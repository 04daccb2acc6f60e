"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary folder, a free loopback port.

initdb and postgres refuse to run as root, so under root both run as the
unprivileged `nobody`. The superuser's password is required over TCP
(scram-sha-256), so tests can also check a refused password. The server is
stopped by its own PID.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.support import free_port
from tests.support import wait_until

PASSWORD = "s3cret-Pg-9f1d2c"
UNPRIVILEGED_USER = "nobody"


def postgres_bin() -> Path | None:
    """Return Debian's newest PostgreSQL bin folder, or None when the package is missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _as_unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


class PostgresServer:
    """One postgres process with its own data folder; stop() ends it and removes the folder."""

    def __init__(self) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed; run scripts/install_system_deps.sh")
        self.folder = Path(tempfile.mkdtemp(prefix="listens-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        password_file = self.folder / "pw"
        password_file.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            os.chown(password_file, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o700)
        subprocess.run(
            [
                *_as_unprivileged(),
                str(binaries / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={password_file}",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            cwd="/",
        )
        password_file.unlink()
        self._binaries = binaries
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *_as_unprivileged(),
                str(self._binaries / "postgres"),
                "-D",
                str(self.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        wait_until(self._ready, 30, f"PostgreSQL on port {self.port}", interval_s=0.1)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"postgres exited with {self.process.returncode}")
        with psycopg.connect(self.url("postgres"), connect_timeout=2):
            return True

    def url(self, dbname: str, *, password: str | None = PASSWORD) -> str:
        secret = f":{password}" if password is not None else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL (with the password)."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop_server(self) -> None:
        """Stop postgres (fast shutdown) by its PID; the data folder stays for start()."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.folder, ignore_errors=True)
