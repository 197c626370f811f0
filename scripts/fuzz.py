"""Long fuzzing campaigns with the strategies of tests/test_fuzz.py.

    python scripts/fuzz.py --seconds 300              # all strategies, five minutes
    python scripts/fuzz.py --examples 20000 --strategy mutated
    python scripts/fuzz.py --seconds 60 --strategy hostile   # examples with hostile pieces spliced in
    python scripts/fuzz.py --corpus                   # time every hostile corpus case instead

Each generated input must parse to a checked model (which then compiles to source that
ast-parses for every target, and formats to text with the same meaning) or raise
LayerDSLError with a position. Anything else is a failure: another exception, a
LayerDSLError without a position, a formatter that changes the model, or a parse slower
than --slow seconds. Failures are printed with the input that caused them (deduplicated by
where they were raised) and the exit status is 1 if there were any.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "hostile")]

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import NonInteractiveExampleWarning  # noqa: E402
from hypothesis.extra.lark import from_lark  # noqa: E402

import layerdsl  # noqa: E402
from layerdsl.backends import SOURCE_TARGETS as TARGETS  # noqa: E402
from layerdsl.parser import _lark  # noqa: E402

warnings.simplefilter("ignore", NonInteractiveExampleWarning)


# Pieces the hostile strategy splices into programs: the corpus's themes, small enough to mix.
HOSTILE_PIECES = [
    b"9" * 5000,
    b"1" + b"0" * 400,
    b" 1e400",
    b" -0.0",
    b"{" * 70,
    b"a {" * 70 + b"}" * 70,
    b"}",
    b"\r",
    b"#\r",
    b"\r\n",
    b"\n\n\n",
    b"\xef\xbb\xbf",
    "\u2028".encode(),
    b"\x00",
    b"\t",
    b"\x0c",
    b" @x ",
    b" | ",
    b" tap x ",
    b'"',
    b"\\",
    b'"\\n"',
    b"x" * 300,
    b"x".join([b"1"] * 3000),
    b" name=__import__",
    b" name=self",
    b' name="a\\nimport os"',
    b" repeat 3 { relu }",
    b" residual {",
]


@st.composite
def hostile_mutation(draw):  # type: ignore[no-untyped-def]
    """An example or small corpus case with hostile pieces spliced in."""
    import make_corpus
    import test_fuzz

    sources = [p.read_bytes() for p in test_fuzz.EXAMPLES] + list(make_corpus.committed().values())
    data = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.sampled_from(HOSTILE_PIECES))
    return bytes(data)


def strategies() -> dict[str, st.SearchStrategy]:
    import test_fuzz

    return {
        "grammar": from_lark(_lark(), start="start", explicit=test_fuzz.EXPLICIT),
        "plausible": test_fuzz.plausible_program(),
        "mutated": test_fuzz.mutated_example(),
        "hostile": hostile_mutation(),
    }


@dataclass
class Failure:
    kind: str
    detail: str
    data: bytes
    count: int = 1


@dataclass
class Campaign:
    slow_s: float
    run: int = 0
    compiled: int = 0
    diagnosed: int = 0
    undecodable: int = 0
    slowest: tuple[float, bytes] = (0.0, b"")
    failures: dict[str, Failure] = field(default_factory=dict)

    def fail(self, key: str, kind: str, detail: str, data: bytes) -> None:
        if key in self.failures:
            self.failures[key].count += 1
            if len(data) < len(self.failures[key].data):
                self.failures[key].data = data  # keep the shortest input per failure
        else:
            self.failures[key] = Failure(kind, detail, data)

    def check(self, data: bytes) -> None:
        self.run += 1
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            self.undecodable += 1  # the CLI reports these before parsing
            return
        start = time.perf_counter()
        try:
            model = layerdsl.parse(text, "fuzz.layers")
        except layerdsl.LayerDSLError as exc:
            self._timed(start, data)
            self.diagnosed += 1
            if exc.line is None and not exc.message.startswith("input is"):
                self.fail(f"noposition:{exc.message[:40]}", "error without a position", exc.message, data)
            return
        except Exception as exc:  # a crash is what we are looking for
            self._crash("parse", exc, data)
            return
        self._timed(start, data)
        self.compiled += 1
        for target in TARGETS:
            try:
                ast.parse(layerdsl.compile(model, target))
            except layerdsl.LayerDSLError:
                pass
            except Exception as exc:
                self._crash(f"compile {target}", exc, data)
        try:
            formatted = layerdsl.format_text(text)
            if _meaning(formatted) != _meaning(text) or layerdsl.format_text(formatted) != formatted:
                self.fail("format-meaning", "formatting changed the model or is not idempotent", "", data)
        except Exception as exc:
            self._crash("format", exc, data)

    def _timed(self, start: float, data: bytes) -> None:
        elapsed = time.perf_counter() - start
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, data)
        if elapsed > self.slow_s:
            self.fail(f"slow:{len(data) // 1000}k", f"parse took {elapsed:.2f} s", "", data)

    def _crash(self, stage: str, exc: BaseException, data: bytes) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        key = f"{stage}:{type(exc).__name__}:{where}"
        self.fail(key, f"{stage}: {type(exc).__name__} at {where}", str(exc)[:300], data)


def _meaning(text: str):  # type: ignore[no-untyped-def]
    try:
        model = layerdsl.parse(text, "fuzz.layers")
    except layerdsl.LayerDSLError as exc:
        return ("error", re.sub(r"\bline [0-9]+", "line N", exc.message))  # formatting moves lines
    return (
        "ok",
        model.name,
        tuple((i.name, i.shape, i.dtype) for i in model.inputs),
        model.outputs,
        [(x.kind, x.name, tuple(x.args.items()), x.output_shape) for x in model.layers],
    )


def run_batch(strategy: st.SearchStrategy, check: Callable[[bytes], None], examples: int, batch_seed: int) -> None:
    @seed(batch_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(value: str | bytes) -> None:
        check(value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value)

    one()


def campaign(args: argparse.Namespace) -> int:
    chosen = strategies() if args.strategy == "all" else {args.strategy: strategies()[args.strategy]}
    state = Campaign(slow_s=args.slow)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    per_strategy = {name: 0 for name in chosen}
    batch = 0
    try:
        while not (deadline is not None and time.monotonic() > deadline) and not (
            args.examples and state.run >= args.examples
        ):
            name = list(chosen)[batch % len(chosen)]
            before = state.run
            size = min(args.batch, args.examples - state.run) if args.examples else args.batch
            run_batch(chosen[name], state.check, size, args.seed + batch)
            per_strategy[name] += state.run - before
            batch += 1
    except KeyboardInterrupt:
        print("interrupted")
    print(f"ran {state.run:,} inputs: " + ", ".join(f"{n} {c:,}" for n, c in per_strategy.items()))
    print(f"  {state.compiled:,} compiled, {state.diagnosed:,} got a diagnostic, {state.undecodable:,} not UTF-8")
    print(f"  slowest parse {state.slowest[0]:.3f} s ({len(state.slowest[1]):,} bytes)")
    if not state.failures:
        print("no failures")
        return 0
    print(f"{len(state.failures)} distinct failures:")
    for failure in state.failures.values():
        print(f"\n- {failure.kind} (x{failure.count})")
        if failure.detail:
            print(f"  {failure.detail}")
        print(f"  input: {failure.data!r}")
    return 1


def _time_case(text: str, out) -> None:  # type: ignore[no-untyped-def]
    """In a child process: (parse s, format s, outcome) for one case, sent down ``out``."""
    timings, outcome = [], ""
    for func in (lambda t: layerdsl.parse(t, "h.layers"), layerdsl.format_text):
        start = time.perf_counter()
        try:
            func(text)
            result = "ok"
        except layerdsl.LayerDSLError as exc:
            result = f"error: {exc.message[:50]}"
        except Exception as exc:
            result = f"CRASH {type(exc).__name__}"
        timings.append(time.perf_counter() - start)
        outcome = outcome or result
    out.send((*timings, outcome))


def corpus_timings(timeout_s: float) -> int:
    """Time parse and format of every hostile corpus case, each in a child process with a timeout."""
    import multiprocessing

    import make_corpus

    context = multiprocessing.get_context("fork")
    layerdsl.format_text("dense 1 in=1")  # build the parser once, before the children fork
    print(f"{'case':52} {'bytes':>9} {'parse s':>8} {'fmt s':>8}  outcome")
    for name, data in sorted(make_corpus.corpus().items()):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            print(f"{name:52} {len(data):9,} {'':17}  not UTF-8 (exit 2 from the CLI)")
            continue
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_time_case, args=(text, send))
        child.start()
        if receive.poll(timeout_s):
            parse_s, fmt_s, outcome = receive.recv()
            print(f"{name:52} {len(data):9,} {parse_s:8.3f} {fmt_s:8.3f}  {outcome}")
        else:
            child.kill()
            print(f"{name:52} {len(data):9,} {'':17}  HANG: no answer in {timeout_s:g} s")
        child.join()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=0, help="stop after this many inputs")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long")
    parser.add_argument("--strategy", choices=["all", "grammar", "plausible", "mutated", "hostile"], default="all")
    parser.add_argument("--seed", type=int, default=0, help="first batch's seed; batches count up from it")
    parser.add_argument("--batch", type=int, default=500, help="inputs per strategy before switching")
    parser.add_argument("--slow", type=float, default=1.0, help="a parse slower than this (s) is a failure")
    parser.add_argument("--corpus", action="store_true", help="time the hostile corpus cases instead")
    parser.add_argument("--timeout", type=float, default=20.0, help="with --corpus: give up on a case after this")
    args = parser.parse_args(argv)
    if args.corpus:
        return corpus_timings(args.timeout)
    if not args.examples and not args.seconds:
        args.examples = 1000
    return campaign(args)


if __name__ == "__main__":
    sys.exit(main())
