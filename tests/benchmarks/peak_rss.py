"""Run one command and record its wall time and peak RSS: a launcher for `measure.py`.

    python -m tests.benchmarks.peak_rss RESULT_JSON -- COMMAND [ARGS...]

Linux charges the memory high-water mark of the process that spawns a child to the child's
`ru_maxrss` (exec keeps the old mm's peak), so a big parent would inflate every reading. This
small launcher is that parent instead: the floor it adds (~10 MiB) is below any real reading.
"""

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    result_path, command = argv[0], argv[2:]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    kib = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    with open(result_path, "w") as out:
        json.dump({"seconds": seconds, "peak_rss_kib": kib}, out)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
