"""CLI cold start: `layerdsl check vgg16.layers` against `python -c "import lark"`.

Goal (issue 2): check starts within 4x the time of importing lark, with no
framework imported. Runs the commands interleaved, side by side, and prints
medians and their ratio; nothing here asserts a time. Also a section of
``benchmarks/run.py``.

    python benchmarks/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "python -c 'import lark'"


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def commands() -> dict[str, list[str]]:
    vgg = str(ROOT / "examples" / "vgg16.layers")
    return {
        BASELINE: [sys.executable, "-c", "import lark"],
        "layerdsl check vgg16.layers": [sys.executable, "-m", "layerdsl", "check", "-q", vgg],
        "layerdsl summary vgg16.layers": [sys.executable, "-m", "layerdsl", "summary", vgg],
        "layerdsl compile vgg16 --target torch": [sys.executable, "-m", "layerdsl", "compile", vgg, "--target", "torch"],
    }


def measure(runs: int) -> dict[str, float]:
    """Command -> median wall seconds over ``runs`` interleaved runs (after one warm-up run each)."""
    cmds = commands()
    for cmd in cmds.values():  # warm the OS cache
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            times[name].append(wall(cmd))
    return {name: statistics.median(samples) for name, samples in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    medians = measure(args.runs)
    base = medians[BASELINE]
    print(f"{'command':<40}{'median ms':>10}{'ratio':>8}")
    for name, med in medians.items():
        print(f"{name:<40}{med * 1000:>10.1f}{med / base:>7.2f}x")
    print(f"\n{args.runs} interleaved runs each; goal: check within 4x of import lark.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
