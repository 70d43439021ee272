"""Running a subprocess and measuring it: wall time, peak RSS, exit code, output."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_kib: int

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    def json(self) -> dict:
        """The last JSON object the process printed (a `--json` summary)."""
        return json.loads(self.stdout[self.stdout.index("{") :])

    def check(self, what: str) -> "Measured":
        if self.returncode != 0:
            raise RuntimeError(
                f"{what} exited with {self.returncode}:\n{self.stdout[-2000:]}\n"
                f"{self.stderr[-2000:]}"
            )
        return self


def run_measured(argv: list[str], *, env: Mapping[str, str], timeout: float = 600) -> Measured:
    """Run `argv` from the repository root through the `peak_rss` launcher."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_path = Path(tmp) / "usage.json"
        launcher = [sys.executable, "-m", "tests.benchmarks.peak_rss", str(result_path), "--"]
        # A session of its own, so a timeout ends the launcher and the command together.
        process = subprocess.Popen(
            launcher + argv,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        usage = json.loads(result_path.read_text())
    return Measured(
        returncode=process.returncode,
        stdout=stdout,
        stderr=stderr,
        seconds=usage["seconds"],
        peak_rss_kib=usage["peak_rss_kib"],
    )


def manage_py(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]
