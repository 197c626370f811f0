"""layerdsl benchmarks: every figure a ratio measured side by side in one run.

    python benchmarks/run.py [--quick] [--output benchmarks/RESULTS.md] [--sections compiler,generated,numpy,memory]

Sections:

- compiler:  parse+check and compile time for 1,000 and 10,000 layers (linear scaling);
             CLI cold start against ``python -c "import lark"``.
- generated: the torch module / Keras model compiled from a ``.layers`` file against the
             same network written by hand as ``nn.Sequential`` / ``keras.Sequential``.
- numpy:     the NumPy backend against PyTorch eager (``no_grad``) and ONNX Runtime on the
             same weights (ONNX Runtime on the torch module's export, the reference, and on
             layerdsl's own onnx target); dense layers as a fraction of bare NumPy matmuls.
- memory:    peak memory of one inference, NumPy against PyTorch, each in a fresh process.

Prints one table per section and writes them, with the machine, versions and date, to
``--output``. Candidates run interleaved, in rotating order, and each figure is a median, so
a busy machine slows all of them alike. ``--quick`` runs tiny sizes and few repeats (a smoke
test of the harness, not a measurement). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(HERE))  # the sibling scripts, when run as `python benchmarks/run.py`

import numpy as np  # noqa: E402

import layerdsl  # noqa: E402
from layerdsl import testing  # noqa: E402

SECTIONS = ("compiler", "generated", "numpy", "memory")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines)


@dataclass
class Settings:
    quick: bool
    sample_s: float  # wall time of one timed sample (several calls)
    rounds: int  # interleaved samples per candidate
    baseline_runtime: Path | None = None  # another numpy_runtime.py to compare the NumPy backend against
    baseline_compiler: Path | None = None  # another layerdsl checkout to compare compile times against


# --- timing ------------------------------------------------------------------------------


def side_by_side(candidates: dict[str, Callable[[], object]], settings: Settings) -> dict[str, float]:
    """Name -> median seconds per call. Each round times every candidate once, in rotating order."""
    return {name: statistics.median(values) for name, values in rounds_side_by_side(candidates, settings).items()}


def rounds_side_by_side(candidates: dict[str, Callable[[], object]], settings: Settings) -> dict[str, list[float]]:
    """Name -> seconds per call in each round, as ``side_by_side`` times them."""
    calls = {}
    for name, fn in candidates.items():
        fn()  # warm-up: lazy initialization, caches
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        calls[name] = max(1, int(settings.sample_s / once))
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_ in range(settings.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            fn, number = candidates[name], calls[name]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}" if seconds < 0.01 else f"{seconds * 1000:.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


# --- compiler ----------------------------------------------------------------------------


def deep_model_text(layers: int) -> str:
    cycle = ["dense 32", "batchnorm", "relu", "dropout 0.1"]
    return "\n".join(["model deep", "input 32"] + [cycle[i % len(cycle)] for i in range(layers)])


def compiler_tables(settings: Settings) -> list[Table]:
    sizes = (100, 1000) if settings.quick else (1000, 10000)
    repeats = 1 if settings.quick else 3
    table = Table(
        "Compiler: time for a model of N layers (dense, batchnorm, relu, dropout, repeated)",
        ["step", *(f"{n:,} layers (ms)" for n in sizes), "per layer, large/small", "goal"],
    )
    layerdsl.compile(layerdsl.parse(deep_model_text(4)), "numpy")  # first-use caches
    times: dict[str, list[float]] = {}
    for n in sizes:
        text = deep_model_text(n)
        best: dict[str, float] = {}
        for _ in range(repeats):
            gc.collect()
            start = time.perf_counter()
            model = layerdsl.parse(text)
            best["parse+check"] = min(best.get("parse+check", 1e9), time.perf_counter() - start)
            for target in ("torch", "keras", "numpy"):
                start = time.perf_counter()
                layerdsl.compile(model, target)
                best[f"compile {target}"] = min(best.get(f"compile {target}", 1e9), time.perf_counter() - start)
        best["parse+check+compile torch"] = best["parse+check"] + best["compile torch"]
        for step, seconds in best.items():
            times.setdefault(step, []).append(seconds)
    small, large = sizes
    for step, (t_small, t_large) in times.items():
        scaling = (t_large / large) / (t_small / small)
        goal = ""
        if step == "parse+check+compile torch" and not settings.quick:
            goal = f"linear, 10,000 under 2 s: {verdict(scaling < 1.5 and t_large < 2.0)}"
        table.add(step, ms(t_small), ms(t_large), f"{scaling:.2f}", goal)
    table.notes.append(
        f"Best of {repeats}. 'per layer, large/small' is the time per layer at {large:,} layers over the time per "
        f"layer at {small:,}: 1.00 is linear scaling."
    )

    import bench_startup

    medians = bench_startup.measure(runs=1 if settings.quick else 15)
    base = medians[bench_startup.BASELINE]
    startup = Table("CLI cold start (subprocesses, interleaved)", ["command", "median ms", "vs import lark", "goal"])
    for name, seconds in medians.items():
        goal = f"within 4x: {verdict(seconds / base <= 4)}" if name == "layerdsl check vgg16.layers" else ""
        startup.add(name, ms(seconds), ratio(seconds, base), goal)
    tables = [table, startup]
    if settings.baseline_compiler:
        tables.append(compiler_baseline_table(settings))
    return tables


# Each model is compiled by this checkout and by the baseline in alternating subprocesses.
_COMPILE_TIMER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import layerdsl
text = open(sys.argv[2]).read()
layerdsl.compile(layerdsl.parse(text), "numpy")  # first-use caches
best = {}
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    model = layerdsl.parse(text)
    best["parse+check"] = min(best.get("parse+check", 1e9), time.perf_counter() - start)
    for target in ("torch", "keras", "numpy"):
        start = time.perf_counter()
        layerdsl.compile(model, target)
        best[target] = min(best.get(target, 1e9), time.perf_counter() - start)
print(repr(best))
"""


def compiler_baseline_table(settings: Settings) -> Table:
    """Parse+check and compile time of this checkout against ``--baseline-compiler``, per example."""
    import ast
    import tempfile

    baseline = settings.baseline_compiler
    assert baseline is not None
    names = ["mnist_convnet", "resnet50"] if settings.quick else ["mnist_convnet", "resnet18", "resnet50",
                                                                  "mobilenet_v2", "densenet121"]
    rounds = 1 if settings.quick else 5
    table = Table(
        f"Compiler: this version against {baseline} (subprocesses, interleaved, best of 3 per round)",
        ["model", "step", "this ms", "baseline ms", "this / baseline", "goal"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        deep = Path(tmp) / "deep.layers"
        deep.write_text(deep_model_text(1000))
        models = [(name, ROOT / "examples" / f"{name}.layers") for name in names] + [("1,000 dense layers", deep)]
        for label, path in models:
            samples: dict[str, dict[str, list[float]]] = {"this": {}, "baseline": {}}
            for round_ in range(rounds):
                order = [("this", ROOT), ("baseline", baseline)]
                for who, tree in order if round_ % 2 == 0 else reversed(order):
                    run = subprocess.run(
                        [sys.executable, "-c", _COMPILE_TIMER, str(tree), str(path), "3"],
                        capture_output=True, text=True,
                    )
                    if run.returncode != 0:  # the baseline predates something the file uses
                        break
                    for step, seconds in ast.literal_eval(run.stdout.strip().splitlines()[-1]).items():
                        samples[who].setdefault(step, []).append(seconds)
                else:
                    continue
                break
            if not samples["baseline"] or not samples["this"]:
                table.add(label, "(the baseline cannot read this file)", "", "", "", "")
                continue
            for step in samples["this"]:
                this = statistics.median(samples["this"][step])
                before = statistics.median(samples["baseline"][step])
                goal = f"at most 1.10x: {verdict(this / before <= 1.10)}" if not settings.quick else ""
                table.add(label, step, ms(this), ms(before), ratio(this, before), goal)
    table.notes.append(f"Median over {rounds} rounds; each round runs both versions in fresh processes.")
    return table


# --- generated models against hand-written ones -------------------------------------------


def _hand_torch(name: str):  # type: ignore[no-untyped-def]
    from torch import nn

    if name == "mnist_convnet":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(1600, 10),
            nn.Softmax(dim=1),
        )
    return nn.Sequential(
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 10),
        nn.Softmax(dim=1),
    )


def _hand_keras(name: str):  # type: ignore[no-untyped-def]
    import keras
    from keras import layers

    if name == "mnist_convnet":
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(32, 3, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Conv2D(64, 3, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dropout(0.5),
                layers.Dense(10, activation="softmax"),
            ]
        )
    return keras.Sequential(
        [
            keras.Input((784,)),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )


_TRAINING_ONLY = ("_initializer", "_constraint")


def generated_tables(settings: Settings) -> list[Table]:
    import keras
    import torch

    cases = [("mnist_convnet", 2 if settings.quick else 64), ("mlp", 2 if settings.quick else 256), ("mlp", 1)]
    table = Table(
        "Generated models against the same network written by hand",
        ["framework", "model", "batch", "generated ms", "hand-written ms", "generated / hand", "spread (IQR)", "goal"],
    )
    for name, batch in cases:
        model = layerdsl.load(EXAMPLES / f"{name}.layers")
        weights = testing.random_weights(model)
        x = testing.random_input(model, batch=batch)

        generated = layerdsl.build(model, target="torch").eval()
        layerdsl.set_weights(generated, weights)
        hand = _hand_torch(name).eval()
        with torch.no_grad():
            for mine, theirs in zip(hand.parameters(), generated.parameters(), strict=True):
                mine.copy_(theirs)
        tx = torch.from_numpy(testing._torch_layout(model.input, x))
        with torch.no_grad():
            np.testing.assert_allclose(hand(tx).numpy(), generated(tx).numpy(), atol=testing.ATOL, rtol=testing.RTOL)

        def under_no_grad(module, tx=tx):  # type: ignore[no-untyped-def]
            def call() -> None:
                with torch.no_grad():
                    module(tx)

            return call

        rounds = rounds_side_by_side({"generated": under_no_grad(generated), "hand": under_no_grad(hand)}, settings)
        table.add("PyTorch eager", name, batch, *_generated_against_hand(rounds))

        k_generated = layerdsl.build(model, target="keras")
        layerdsl.set_weights(k_generated, weights)
        k_hand = _hand_keras(name)
        k_hand.set_weights(k_generated.get_weights())
        # the same Keras layers with the same configurations, but for their names and for the initializers
        # and constraints (the example's mlp has some) that inference does not run
        unnamed = [
            [
                {k: v for k, v in layer.get_config().items() if k != "name" and not k.endswith(_TRAINING_ONLY)}
                for layer in m.layers
                if not isinstance(layer, keras.layers.InputLayer)  # a Sequential does not list its input
            ]
            for m in (k_generated, k_hand)
        ]
        assert unnamed[0] == unnamed[1], "the generated Keras model is not the hand-written one"
        np.testing.assert_allclose(
            np.asarray(k_hand(x, training=False)), np.asarray(k_generated(x, training=False)), atol=1e-5, rtol=1e-4
        )
        rounds = rounds_side_by_side(
            {
                "generated": lambda m=k_generated, x=x: m(x, training=False),
                "hand": lambda m=k_hand, x=x: m(x, training=False),
            },
            settings,
        )
        table.add("Keras eager", name, batch, *_generated_against_hand(rounds))
    table.notes.append(
        "Same weights in both, outputs checked equal first. PyTorch: `module(x)` under `torch.no_grad()` in eval mode; "
        "Keras: `model(x, training=False)`; the generated Keras model fuses each `| relu` into its Conv2D/Dense, as "
        "the hand-written one does: both have the same layers with the same inference configurations (checked). "
        f"{settings.rounds} interleaved rounds: the times are medians over the rounds, "
        "'generated / hand' the median of each round's ratio (both timed in that round), the spread the "
        "interquartile range of those ratios; the goal is met when the median ratio is at most 1.02."
    )
    return [table]


def _generated_against_hand(rounds: dict[str, list[float]]) -> list[str]:
    """Cells: median ms of each, the median of the per-round ratios, their IQR, and the 2% verdict."""
    ratios = [g / h for g, h in zip(rounds["generated"], rounds["hand"], strict=True)]
    median = statistics.median(ratios)
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (median,) * 3
    return [
        ms(statistics.median(rounds["generated"])),
        ms(statistics.median(rounds["hand"])),
        f"{median:.3f}x",
        f"{low:.3f}-{high:.3f}x",
        f"within 2%: {verdict(median <= 1.02)}",
    ]


# --- NumPy backend against PyTorch and ONNX Runtime --------------------------------------


def _onnx_session(module, example, threads):  # type: ignore[no-untyped-def]
    """An ONNX Runtime session for ``module`` (TorchScript exporter), or the reason there is none."""
    try:
        import onnxruntime
        import torch
    except ImportError as error:
        return None, f"not installed ({error.name})"
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            )
    except Exception as error:  # the table says why; the other columns still count
        return None, f"export failed: {type(error).__name__}"
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return session, ""


def _layerdsl_onnx_session(model, weights, threads):  # type: ignore[no-untyped-def]
    """An ONNX Runtime session for layerdsl's own ONNX export of ``model``, or the reason there is none."""
    try:
        import onnxruntime
    except ImportError as error:
        return None, f"not installed ({error.name})"
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    data = layerdsl.compile(model, "onnx", weights=weights)
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"]), ""


NUMPY_CASES = [
    # (label, example file, batch, goal: numpy / torch at most)
    ("MLP 784-512-512-10", "mlp", 1, 1.0),
    ("MLP 784-512-512-10", "mlp", 256, 1.2),
    ("MNIST convnet", "mnist_convnet", 64, 1.5),
    ("masked LSTM (sentiment: 80 steps, 64 units)", "sentiment", 32, 1.5),
    ("encoder (4 layers, 128 features, 4 heads, 64 steps)", "small_encoder", 8, 1.5),
]


def _case_file(name: str) -> Path:
    """An example, or a model kept with the benchmarks (``small_encoder``)."""
    own = HERE / f"{name}.layers"
    return own if own.is_file() else EXAMPLES / f"{name}.layers"


def build_numpy_with(runtime_path: Path, model):  # type: ignore[no-untyped-def]
    """The NumPy model that ``runtime_path`` (another version of numpy_runtime.py) would generate."""
    import importlib.util

    from layerdsl import backends
    from layerdsl.backends import numpy_backend

    spec = importlib.util.spec_from_file_location("baseline_numpy_runtime", runtime_path)
    assert spec is not None and spec.loader is not None
    runtime = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = runtime  # inspect.getsource finds classes' files through sys.modules
    spec.loader.exec_module(runtime)
    caches = (numpy_backend._runtime_pieces, numpy_backend._piece_source, numpy_backend._direct_needs)
    current = backends.numpy_runtime
    try:
        for cache in caches:
            cache.cache_clear()
        backends.numpy_runtime = runtime  # what `from . import numpy_runtime` finds
        return layerdsl.build(model, target="numpy")
    finally:
        backends.numpy_runtime = current
        for cache in caches:
            cache.cache_clear()


def numpy_tables(settings: Settings) -> list[Table]:
    tables = _numpy_tables(settings, threads=None)
    if settings.quick:
        return tables
    try:
        import threadpoolctl
    except ImportError:
        return tables
    with threadpoolctl.threadpool_limits(1):
        return tables + _numpy_tables(settings, threads=1)


def _numpy_tables(settings: Settings, threads: int | None) -> list[Table]:
    import torch

    where = "each framework's default threads" if threads is None else "every framework on 1 thread"
    table = Table(
        f"NumPy backend against PyTorch eager and ONNX Runtime ({where})",
        [
            "model",
            "batch",
            "NumPy ms",
            "PyTorch ms",
            "ONNX Runtime ms",
            "ORT, layerdsl export ms",
            "NumPy / PyTorch",
            "NumPy / ORT",
            "NumPy / ORT (layerdsl export)",
            "goal",
        ],
    )
    dense = Table(
        f"NumPy dense layers against bare NumPy matmuls of the same shapes ({where})",
        ["model", "batch", "model ms", "matmuls ms", "throughput, fraction of matmul", "GFLOP/s"],
    )
    before = Table(
        f"NumPy runtime: this version against {settings.baseline_runtime} ({where})",
        ["model", "batch", "this ms", "baseline ms", "this / baseline"],
    )
    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        _numpy_cases(settings, threads, table, dense, before)
    finally:
        torch.set_num_threads(default_threads)
    return [table, dense] + ([before] if settings.baseline_runtime else [])


def _numpy_cases(settings: Settings, threads: int | None, table: Table, dense: Table, before: Table) -> None:
    import torch

    for label, name, batch, goal in NUMPY_CASES:
        if settings.quick:
            batch = min(batch, 2)
        model = layerdsl.load(_case_file(name))
        weights = testing.random_weights(model)
        x = testing.random_input(model, batch=batch)
        np_model = layerdsl.build(model, target="numpy")
        layerdsl.set_weights(np_model, weights)
        torch_model = layerdsl.build(model, target="torch").eval()
        layerdsl.set_weights(torch_model, weights)
        tx = torch.from_numpy(testing._torch_layout(model.input, x))
        with torch.no_grad():
            expected = testing._from_torch_layout(model.output_shape, torch_model(tx).numpy())
        np.testing.assert_allclose(np_model(x), expected, atol=testing.ATOL, rtol=testing.RTOL)
        session, why = _onnx_session(torch_model, tx, threads)
        exported, exported_why = _layerdsl_onnx_session(model, weights, threads)

        def run_torch(torch_model=torch_model, tx=tx) -> None:  # type: ignore[no-untyped-def]
            with torch.no_grad():
                torch_model(tx)

        candidates: dict[str, Callable[[], object]] = {
            "numpy": lambda np_model=np_model, x=x: np_model(x),
            "torch": run_torch,
        }
        if session is not None:
            feed = {"x": tx.numpy()}
            np.testing.assert_allclose(
                session.run(None, feed)[0], torch_model(tx).detach().numpy(), atol=testing.ATOL, rtol=testing.RTOL
            )
            candidates["ort"] = lambda session=session, feed=feed: session.run(None, feed)
        if exported is not None:
            own_feed = {"input": x}
            np.testing.assert_allclose(exported.run(None, own_feed)[0], expected, atol=testing.ATOL, rtol=testing.RTOL)
            candidates["ort_layerdsl"] = lambda exported=exported, feed=own_feed: exported.run(None, feed)
        if settings.baseline_runtime:
            baseline = build_numpy_with(settings.baseline_runtime, model)
            layerdsl.set_weights(baseline, weights)
            np.testing.assert_allclose(baseline(x), expected, atol=testing.ATOL, rtol=testing.RTOL)
            candidates["baseline"] = lambda baseline=baseline, x=x: baseline(x)
        t = side_by_side(candidates, settings)
        if "baseline" in t:
            before.add(label, batch, ms(t["numpy"]), ms(t["baseline"]), ratio(t["numpy"], t["baseline"]))
        ort_ms = ms(t["ort"]) if "ort" in t else f"n/a ({why})"
        ort_ratio = ratio(t["numpy"], t["ort"]) if "ort" in t else "n/a"
        own_ms = ms(t["ort_layerdsl"]) if "ort_layerdsl" in t else f"n/a ({exported_why})"
        own_ratio = ratio(t["numpy"], t["ort_layerdsl"]) if "ort_layerdsl" in t else "n/a"
        within = "faster" if goal == 1.0 else f"within {goal}x"
        table.add(
            label,
            batch,
            ms(t["numpy"]),
            ms(t["torch"]),
            ort_ms,
            own_ms,
            ratio(t["numpy"], t["torch"]),
            ort_ratio,
            own_ratio,
            f"{within}: {verdict(t['numpy'] <= goal * t['torch'])}",
        )
        if name == "mlp":
            kernels = [np_model.layers[layer.name].kernel for layer in model.layers if layer.kind == "dense"]

            def matmuls(x=x, kernels=kernels):  # type: ignore[no-untyped-def]
                for kernel in kernels:
                    x = x @ kernel
                return x

            t = side_by_side({"model": lambda np_model=np_model, x=x: np_model(x), "matmuls": matmuls}, settings)
            flops = 2 * batch * sum(k.shape[0] * k.shape[1] for k in kernels)
            dense.add(
                label,
                batch,
                ms(t["model"]),
                ms(t["matmuls"]),
                f"{t['matmuls'] / t['model']:.2f}",
                f"{flops / t['model'] / 1e9:.1f}",
            )
    table.notes.append(
        "Ratios below 1 mean NumPy is faster. PyTorch: eval mode under `torch.no_grad()`, NCHW input. ONNX Runtime: "
        "the same torch module exported with `torch.onnx.export(dynamo=False)` (the masked LSTM's step loop is "
        "unrolled by tracing), CPUExecutionProvider, default session options (in the 1-thread table: 1 intra- and inter-op thread). "
        "'ORT, layerdsl export': the same session settings on `layerdsl.compile(model, 'onnx')` (channels-last input; "
        "the masked LSTM is a Scan loop over the real mask). Outputs are checked equal first."
    )
    dense.notes.append(
        "'matmuls' is `x @ W1 @ W2 @ W3` with the model's own kernels (no bias, no activation, no softmax); the "
        "fraction is matmul time over model time (1.00: the model costs nothing beyond its GEMMs)."
    )


# --- peak memory -------------------------------------------------------------------------

_PROBE = """
import json, sys
import numpy as np
import layerdsl
from layerdsl import testing

framework, name, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = layerdsl.load(name)
x = testing.random_input(model, batch=batch)


def status(field):  # kB -> bytes; VmHWM is this process's own peak (ru_maxrss carries the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


if framework == "torch":
    import torch

    live = layerdsl.build(model, target="torch").eval()
    x = torch.from_numpy(testing._torch_layout(model.input, x))
    torch.set_grad_enabled(False)
else:
    live = layerdsl.build(model, target="numpy")
found = {}
for call in ("first", "steady"):
    reset_peak()
    before = status("VmRSS")
    live(x)
    found[call] = status("VmHWM") - before
if framework == "numpy":
    import tracemalloc

    tracemalloc.start()
    live(x)
    found["traced"] = tracemalloc.get_traced_memory()[1]
print(json.dumps(found))
"""


def memory_tables(settings: Settings) -> list[Table]:
    batch = 2 if settings.quick else 64
    path = str(EXAMPLES / "mnist_convnet.layers")
    table = Table(
        f"Peak memory of one inference: MNIST convnet, batch {batch} (a fresh process each)",
        ["framework", "first call MiB", "later calls MiB", "tracemalloc MiB", "NumPy / PyTorch, later calls", "goal"],
    )
    found: dict[str, dict[str, float]] = {}
    for framework in ("numpy", "torch"):
        runs = []
        for _ in range(1 if settings.quick else 3):
            out = subprocess.run(
                [sys.executable, "-c", _PROBE, framework, path, str(batch)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},  # big buffers go back to the OS when freed
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        found[framework] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    mib = 1024 * 1024
    mine, theirs = found["numpy"], found["torch"]
    table.add(
        "NumPy",
        f"{mine['first'] / mib:.1f}",
        f"{mine['steady'] / mib:.1f}",
        f"{mine['traced'] / mib:.1f}",
        ratio(mine["steady"], theirs["steady"]) if theirs["steady"] > 0 else "n/a",
        f"within 2x: {verdict(mine['steady'] <= 2 * theirs['steady'])}",
    )
    table.add("PyTorch", f"{theirs['first'] / mib:.1f}", f"{theirs['steady'] / mib:.1f}", "", "", "")
    table.notes.append(
        "Peak resident memory during one call (VmHWM, reset through /proc/self/clear_refs) minus resident memory just "
        "before it, once imports, model and input exist; median of 3 processes. glibc's mmap threshold is fixed at 64 KiB "
        "(`MALLOC_MMAP_THRESHOLD_`) so that freed buffers leave the resident set and each call's own peak shows. The first call also counts one-time "
        "allocations (BLAS and oneDNN scratch space, lazily loaded code); later calls are the steady state. "
        "tracemalloc: the peak of NumPy's own arrays during a call, exactly."
    )
    return [table]


# --- the machine -------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- python {platform.python_version()}; "
        + ", ".join(
            f"{p} {_version(p)}" for p in ("numpy", "torch", "keras", "tensorflow-cpu", "onnxruntime", "onnx", "lark")
        ),
    ]
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        lines.append(f"- load average (1, 5, 15 min) when written: {load}; other processes share the CPUs")
    env = {k: v for k, v in os.environ.items() if "BLAS" in k or k.startswith(("OMP_", "MKL_"))}
    lines.append(f"- thread settings in the environment: {env or 'none'}")
    try:
        import torch

        lines.append(f"- torch threads: {torch.get_num_threads()}")
    except ImportError:
        pass
    try:
        import threadpoolctl

        for pool in threadpoolctl.threadpool_info():
            details = ", ".join(str(pool[key]) for key in ("version", "threading_layer", "architecture") if pool.get(key))
            lines.append(
                f"- threadpool: {pool.get('internal_api')} ({details or 'no details'}), "
                f"{pool.get('num_threads')} threads, {Path(pool.get('filepath', '')).name}"
            )
    except ImportError:
        lines.append("- threadpoolctl not installed: BLAS thread pools not listed")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: checks the harness only")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    parser.add_argument(
        "--baseline-runtime", type=Path, help="another numpy_runtime.py: adds a before/after table to 'numpy'"
    )
    parser.add_argument(
        "--baseline-compiler", type=Path,
        help="another layerdsl checkout (e.g. a git worktree of an older commit): adds a before/after table to 'compiler'",
    )
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    settings = Settings(args.quick, sample_s=0.001, rounds=2) if args.quick else Settings(False, 0.05, 21)
    settings.baseline_runtime = args.baseline_runtime
    settings.baseline_compiler = args.baseline_compiler
    builders = {
        "compiler": compiler_tables,
        "generated": generated_tables,
        "numpy": numpy_tables,
        "memory": memory_tables,
    }
    tables: list[Table] = []
    for section in sections:
        for table in builders[section](settings):
            print(table.markdown(), end="\n\n", flush=True)
            tables.append(table)
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    if args.sections != ",".join(SECTIONS):
        command += f" --sections {args.sections}"
    if args.baseline_runtime:
        command += f" --baseline-runtime {args.baseline_runtime}"
    if args.baseline_compiler:
        command += f" --baseline-compiler {args.baseline_compiler.name}"
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Written by `{command}`. Every ratio compares candidates measured side by side in this one run"
            + (" (QUICK MODE: tiny sizes, not a measurement)." if args.quick else "."),
            "",
            *machine_lines(),
            "",
            *(table.markdown() + "\n" for table in tables),
        ]
    )
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
