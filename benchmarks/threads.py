"""`snncompress demo` wall time by thread count, idle and with another CPU-bound process holding a core.

    python benchmarks/threads.py [--epochs N] [--repeats R]

Runs the demo command as a user does (a fresh process each time), side by side in one run:
``--threads 1``, ``--threads 2`` and the default (chosen from the work), each on an otherwise idle
machine and while a busy-looping process holds one core. Prints a table and writes
benchmarks/results/threads.json. The target (issue "Passes that compose"): the default within 1.3x
of its idle time when another process holds a core, and never slower than one thread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "threads.json"


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def run_demo(threads: int | None, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "snncompress.cli.app"]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        cmd += ["demo", "-o", str(Path(tmp) / "d.safetensors"), "--epochs", str(epochs)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="QAT epochs of the demo recipe (5: the default)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for busy in (False, True):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,)) if busy else None
        if spinner:
            spinner.start()
        try:
            for label, threads in (("1 thread", 1), ("2 threads", 2), ("default", None)):
                times = [run_demo(threads, args.epochs) for _ in range(args.repeats)]
                rows.append({"busy_core": busy, "threads": label, "seconds": min(times), "all": times})
                print(f"{'busy' if busy else 'idle'} {label:9s} {min(times):6.1f} s", flush=True)
        finally:
            if spinner:
                stop.set()
                spinner.join()
    idle = {r["threads"]: r["seconds"] for r in rows if not r["busy_core"]}
    loaded = {r["threads"]: r["seconds"] for r in rows if r["busy_core"]}
    summary = {
        "default_loaded_over_idle": loaded["default"] / idle["default"],
        "default_over_one_thread_idle": idle["default"] / idle["1 thread"],
        "default_over_one_thread_loaded": loaded["default"] / loaded["1 thread"],
        "load_average_at_end": os.getloadavg(),
        "epochs": args.epochs,
    }
    print(json.dumps(summary, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
