"""The playground's Python side, run inside the page by Pyodide: one `analyze(text)` call per edit.

It returns JSON for playground.js: the diagnostics (from layerdsl.diagnose), and for a correct
model the summary table, the SVG diagram, the generated Keras / PyTorch / NumPy source and the
Python a person runs to try the model (NumPy itself is not available in the page).
"""

import dataclasses
import json

import layerdsl
from layerdsl.graph import to_svg

FILENAME = "model.layers"
TARGETS = ("keras", "torch", "numpy")


def _draw(model_input):
    shape = ", ".join(str(d) for d in model_input.fed_shape)
    if model_input.dtype.startswith("int"):
        return f"rng.integers(1, 10, size=(2, {shape}))"
    return f"rng.standard_normal((2, {shape}), dtype=np.float32)"


def run_snippet(model):
    header = (
        "# Running a model needs Python with NumPy (or PyTorch / Keras); this page has neither.\n"
        "# Save the text as model.layers, `pip install layerdsl numpy`, then:\n"
        "import numpy as np\n"
        "import layerdsl\n\n"
        'net = layerdsl.build(layerdsl.load("model.layers"), target="numpy")\n'
        "rng = np.random.default_rng(0)\n"
    )
    if len(model.inputs) > 1 or len(model.outputs) > 1:  # one array per input; a tuple of outputs
        draws = ", ".join(_draw(i) for i in model.inputs)
        return header + (
            f"xs = [{draws}]\n"
            "y = net(*xs)\n"
            "print([out.shape for out in y] if isinstance(y, tuple) else y.shape)\n"
        )
    return header + f"x = {_draw(model.input)}\nprint(net(x).shape)\n"


def analyze(text):
    diagnostics = [dataclasses.asdict(d) for d in layerdsl.diagnose(text, FILENAME)]
    result = {"diagnostics": diagnostics, "summary": None, "svg": None, "sources": {}, "run": None, "total": None}
    if any(d["severity"] == "error" for d in diagnostics):
        return json.dumps(result)
    model = layerdsl.parse(text, FILENAME)
    sources = {}
    for target in TARGETS:
        try:
            sources[target] = layerdsl.compile(model, target)
        except layerdsl.LayerDSLError as exc:
            sources[target] = f"# layerdsl cannot generate {target} source for this model:\n# {exc.message}\n"
    result.update(
        summary=layerdsl.summary(model), svg=to_svg(model), sources=sources, run=run_snippet(model),
        total=model.total_params,
    )
    return json.dumps(result)
