"""`make serve` run as an operator runs it, for the tests that start it: a free port, the
process group started and ended for sure, pages fetched with redirects followed."""

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from tests.support.cluster import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(env: dict[str, str], log: Path) -> subprocess.Popen:
    # `-o` takes the venv's install stamp as up to date: this test runs from that venv, and a
    # `pyproject.toml` edited since the last install must not make a test run pip.
    return subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed-stamp", "serve"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # make, its shell and gunicorn's workers: one process group
    )


def stop(process: subprocess.Popen) -> None:
    """End the whole process group, gracefully first, and wait until none of it is left."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10)


def get(url: str, **headers: str) -> tuple[int, Message, bytes]:
    """Status, headers (case-insensitive) and raw body; redirects followed."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_until_it_answers(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll until `url` answers 200 (the login page it redirects to) or the server dies."""
    deadline = time.monotonic() + 180  # migrate + collectstatic + gunicorn's boot
    while True:
        if process.poll() is not None:
            pytest.fail(f"make serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            status, _, _ = get(url)
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer within 180 s:\n{log.read_text()}")
        time.sleep(0.1)
