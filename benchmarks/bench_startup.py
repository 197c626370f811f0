"""CLI cold start: `layerdsl check vgg16.layers` against `python -c "import lark"`.

Goal (issue 2): check starts within 4x the time of importing lark, with no
framework imported. Runs the two commands interleaved, side by side, and
prints medians and their ratio; nothing here asserts a time.

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


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    vgg = str(ROOT / "examples" / "vgg16.layers")
    commands = {
        "python -c 'import lark'": [sys.executable, "-c", "import lark"],
        "layerdsl check vgg16.layers": [sys.executable, "-m", "layerdsl", "check", "-q", vgg],
        "layerdsl summary vgg16.layers": [sys.executable, "-m", "layerdsl", "summary", vgg],
        "layerdsl compile vgg16 --target torch": [sys.executable, "-m", "layerdsl", "compile", vgg, "--target", "torch"],
    }
    for cmd in commands.values():  # warm the OS cache
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    base = statistics.median(times["python -c 'import lark'"])
    print(f"{'command':<40}{'median ms':>10}{'ratio':>8}")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:<40}{med * 1000:>10.1f}{med / base:>7.2f}x")
    print(f"\n{args.runs} interleaved runs each; goal: check within 4x of import lark.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
