"""Compile a .layers model to every backend and show they all compute the same function.

    python examples/compare_backends.py examples/mnist_convnet.layers

Writes the generated sources (and the ONNX file) to out/, imports each one as a standalone module,
loads the same random weights (non-trivial BatchNorm statistics included) into
every backend through layerdsl's canonical weights, and prints how far apart
the outputs are.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import layerdsl
from layerdsl import testing


def import_generated(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_onnx_file(path: Path, model, weights, x):  # type: ignore[no-untyped-def]
    import onnxruntime

    path.write_bytes(layerdsl.compile(model, "onnx", weights=weights))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = x if len(model.inputs) > 1 else (x,)
    feed = {model_input.name: array for model_input, array in zip(model.inputs, arrays, strict=True)}
    start = time.perf_counter()
    y = session.run(None, feed)
    y = tuple(y) if len(model.outputs) > 1 else y[0]
    elapsed = (time.perf_counter() - start) * 1000
    print(f"{'onnx':>6}: wrote {path} ({path.stat().st_size // 1024} KiB), onnxruntime inference {elapsed:7.1f} ms")
    return y


def main(argv: list[str]) -> int:
    source = Path(argv[1] if len(argv) > 1 else "examples/mnist_convnet.layers")
    model = layerdsl.load(source)
    print(layerdsl.summary(model), end="\n\n")

    out_dir = Path("out")
    out_dir.mkdir(exist_ok=True)
    weights = testing.random_weights(model, seed=0)
    x = testing.random_input(model, batch=4, seed=1)
    targets = testing.available_targets()
    outputs = {}
    for target in targets:
        if target == "onnx":  # a model file, run by onnxruntime as it is
            outputs[target] = run_onnx_file(out_dir / f"{model.name}.onnx", model, weights, x)
            continue
        path = out_dir / f"{model.name}_{target}.py"
        path.write_text(layerdsl.compile(model, target))
        generated = import_generated(path)  # the standalone file, not the live build
        live = generated.build_model()
        layerdsl.set_weights(live, weights, source=model)
        start = time.perf_counter()
        outputs[target] = testing.run(target, live, model, x)
        elapsed = (time.perf_counter() - start) * 1000
        print(f"{target:>6}: wrote {path} ({len(path.read_text().splitlines())} lines), inference {elapsed:7.1f} ms")

    reference = "keras" if "keras" in outputs else targets[0]
    ref = outputs[reference]
    print(f"\nOutputs on the same input and weights, compared with {reference} (atol 1e-5, rtol 1e-4):")
    agree = True
    for target, y in outputs.items():
        for number, (part, expected) in enumerate(zip(testing.outputs_of(y), testing.outputs_of(ref), strict=True)):
            diff = float(np.max(np.abs(part - expected)))
            ok = np.allclose(part, expected, atol=testing.ATOL, rtol=testing.RTOL)
            agree &= ok
            which = f" {number + 1}" if len(model.outputs) > 1 else ""
            print(f"  {target:>6}: output{which} {tuple(part.shape)}, max |diff| = {diff:.2e}  {'agree' if ok else 'DIFFER'}")
    if len(model.outputs) == 1 and ref.ndim == 2:
        print("\nArgmax per example:", {t: y.argmax(-1).tolist() for t, y in outputs.items()})
    missing = sorted({"keras", "torch", "numpy"} - set(targets))
    if missing:
        print(f"\n(not installed here, skipped: {', '.join(missing)}; pip install 'layerdsl[all]')")
    print("\nAll backends agree." if agree else "\nBACKENDS DISAGREE.")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
