"""Waiting for a child process to be ready, stopping it by its own PID (politely first, then for sure), timing a call."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest


def stop_process(process: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM process if it still runs; SIGKILL it when it has not exited within timeout_s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(check, timeout_s: float, what: str, interval_s: float = 0.02):
    """Call check() until it returns a truthy value; fail with what after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # readiness probes fail until the process is up
            last_error = error
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last error: {last_error!r})")


def wait_ready(server, ready, timeout_s: float, what: str, interval_s: float = 0.02) -> None:
    """Wait until ready() (as wait_until does); if it never is, stop server, then raise."""
    try:
        wait_until(ready, timeout_s, what, interval_s=interval_s)
    except BaseException:
        server.stop()
        raise


def timed(call, *args, **kwargs):
    """Return call(*args, **kwargs)'s value and the seconds it took."""
    started = time.monotonic()
    value = call(*args, **kwargs)
    return value, time.monotonic() - started


def required_tool(name: str, package: str, why: str = "") -> str:
    """Return the path of the command name; fail the test (never skip) when it is missing, naming its Debian package."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: install the Debian package '{package}'"
            f" (scripts/install_system_deps.sh does it; make test and .ci/run run that first){why}",
            pytrace=False,
        )
    return path


def run_python(code: str, cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (nothing imported yet) from cwd; return it finished, output captured."""
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
