"""Fuzzing: programs generated from the grammar, and mutated examples, never crash the compiler.

Property: parsing either returns a checked model (which then compiles to
source that ast-parses) or raises LayerDSLError with a line and column.
"""

import ast
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

import layerdsl
from layerdsl import specs
from layerdsl.parser import _lark

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.layers"))

OPTION_NAMES = sorted({p.name for spec in specs.REGISTRY.values() for p in spec.params} | {"name", "dtype", "layout"})
WORDS = sorted({*specs.REGISTRY, *specs.DIRECTIVES, *OPTION_NAMES, "true", "false", "same", "valid", "causal",
                "int32", "float32", "channels_first", "relu", "he_normal"})

# Mostly real vocabulary, so generated programs get past name lookup into the checker.
names = st.one_of(
    st.sampled_from(WORDS), st.sampled_from(WORDS), st.sampled_from(WORDS),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
)
ints = st.one_of(st.integers(1, 12), st.integers(-3, 40), st.integers(-(10**12), 10**12)).map(str)
floats = st.one_of(
    st.floats(-2, 2, allow_nan=False).map(lambda f: repr(round(f, 3))),
    st.sampled_from(["1e-3", "0.5", "1.0", "1e400", "-0.0"]),
)
dims = st.lists(st.integers(0, 40), min_size=2, max_size=4).map(lambda ds: "x".join(map(str, ds)))
# Arithmetic words (issue 11): block parameters, in_channels, operators, min/max, and bad ones.
expression_leaves = st.one_of(st.integers(0, 64).map(str), st.sampled_from(["c", "k", "in_channels", "channels", "n"]))
expressions = st.recursive(
    expression_leaves,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "%", "/"]), inner).map("".join),
        st.tuples(inner, inner).map(lambda t: f"max({t[0]},{t[1]})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=6,
).filter(lambda e: any(op in e for op in "+-*/%(") and e.count("(") <= 5)
dims_with_names = st.lists(st.one_of(st.integers(0, 12).map(str), st.sampled_from(["c", "(c*2)", "(k//2)"])),
                           min_size=2, max_size=4).map(lambda parts: "x".join(parts)).filter(lambda d: d[0] != "c")

EXPLICIT = {
    "NAME": names,
    "INT": ints,
    "FLOAT": floats,
    "DIMS": st.one_of(dims, dims_with_names),
    "EXPR": expressions,
    "STRING": st.text(string.printable.replace('"', "").replace("\\", "").replace("\n", "").replace("\r", ""), max_size=8).map(lambda s: f'"{s}"'),
    "_SEP": st.sampled_from(["\n", " | ", "\n\n"]),
}


def parse_or_error(text: str) -> None:
    try:
        model = layerdsl.parse(text, "fuzz.layers")
    except layerdsl.LayerDSLError as exc:
        assert exc.filename == "fuzz.layers"
        assert exc.line is None or exc.line >= 1
        str(exc)
        return
    for target in ("keras", "torch", "numpy"):
        try:
            ast.parse(layerdsl.compile(model, target))
        except layerdsl.LayerDSLError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(from_lark(_lark(), start="start", explicit=EXPLICIT))
def test_generated_programs_parse_or_fail_cleanly(text):
    parse_or_error(text)


INPUTS = ["input 12", "input 9x8x3", "input 10x4", "input 10 dtype=int32", "input 3x9x8 layout=channels_first"]


def _value(draw, param):  # type: ignore[no-untyped-def]
    if param.type == "choice":
        return draw(st.sampled_from(param.choices))
    if param.type == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if param.type == "float":
        return draw(st.sampled_from(["0.0", "0.25", "0.5", "0.99", "2.0", "1e-3"]))
    if param.type == "size2":
        return draw(st.sampled_from(["1", "2", "3", "2x1", "1x3"]))
    return str(draw(st.integers(1, 6)))


@st.composite
def plausible_program(draw):
    """An input and a few registry layers with in-range arguments: mostly valid models."""
    lines = [draw(st.sampled_from(INPUTS))]
    for _ in range(draw(st.integers(1, 5))):
        name = draw(st.sampled_from(sorted(specs.REGISTRY)))
        spec = specs.REGISTRY[name]
        parts = [name]
        if spec.wraps:
            inner = draw(st.sampled_from(spec.wraps))
            parts.append(inner)
            spec = specs.REGISTRY[inner]
        for param in spec.params:
            if param.positional and (param.required or draw(st.booleans())):
                parts.append(_value(draw, param))
        for param in spec.params:
            if not param.positional and param.name != "in" and draw(st.integers(0, 3)) == 0:
                parts.append(f"{param.name}={_value(draw, param)}")
        lines.append(" ".join(parts))
    return "\n".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(plausible_program())
def test_plausible_programs_compile_and_run_with_the_checked_shapes(text):
    import numpy as np

    from layerdsl import testing

    try:
        model = layerdsl.parse(text, "fuzz.layers")
    except layerdsl.LayerDSLError as exc:
        assert exc.line is not None
        return
    for target in ("keras", "torch", "numpy"):
        ast.parse(layerdsl.compile(model, target))
    live = layerdsl.build(model, target="numpy")
    y = live(testing.random_input(model, batch=2, padding="random"))
    assert y.shape == (2, *model.output_shape)
    assert y.dtype == np.float32


@st.composite
def mutated_example(draw):
    data = bytearray(draw(st.sampled_from(EXAMPLES)).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"|", b"\n", b"=", b"x", b"3", b"-", b"\x00", b"\xff", b'"', b"#"]))
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_example())
def test_mutated_examples_parse_or_fail_cleanly(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the CLI reports undecodable files before parsing (tested in test_cli)
    parse_or_error(text)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_checks(example):
    layerdsl.load(example)


# --- transformers and several inputs/outputs (issue 10) -------------------------------------


@st.composite
def transformer_program(draw):
    """One to three named inputs, each a chain of sequence layers (attention, possibly across
    chains, position embeddings, class tokens, dense on sequences, merges with other chains),
    and an `output` of some of the tensors: mostly valid, with the odd wrong size or name."""
    features = draw(st.sampled_from([4, 6, 8]))
    steps = draw(st.integers(1, 6))
    lines, tensors = [], []
    for i in range(draw(st.integers(1, 3))):
        name = f"in{i}"
        if draw(st.booleans()):
            lines.append(f"input {steps} dtype=int32 name={name}")
            lines.append(f"embedding 11 {features}" + draw(st.sampled_from(["", " mask_zero=true"])))
        else:
            lines.append(f"input {draw(st.sampled_from([steps, steps + 1]))}x{features} name={name}")
        tensors.append(name)
        for _ in range(draw(st.integers(0, 4))):
            heads, key_dim = draw(st.integers(1, 3)), draw(st.integers(1, 5))
            lines.append(draw(st.sampled_from([
                f"attention {heads} {key_dim}",
                f"attention {heads} {key_dim} causal=true",
                f"attention {heads} {key_dim} value_dim={draw(st.integers(1, 4))} bias=false",
                f"attention {heads} {key_dim} @{draw(st.sampled_from(tensors))}",
                "posembed", "classtoken", "layernorm", f"dense {features}", "gelu approximate=true",
                f"add @{draw(st.sampled_from(tensors))}", f"concat @{draw(st.sampled_from(tensors))}",
                f"residual {{ attention {heads} {key_dim} | dropout 0.1 }}",
                f"select {draw(st.integers(-steps, steps))}",
            ])))
        tap = f"t{i}"
        lines.append(f"tap {tap}")
        tensors.append(tap)
    chosen = draw(st.lists(st.sampled_from(tensors), min_size=1, max_size=3, unique=True))
    lines.append("output " + " ".join(f"@{t}" for t in chosen))
    return "\n".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(transformer_program())
def test_transformer_programs_compile_and_run_with_the_checked_shapes(text):
    import numpy as np

    from layerdsl import testing

    try:
        model = layerdsl.parse(text, "fuzz.layers")
    except layerdsl.LayerDSLError as exc:
        assert exc.line is not None, exc.render()
        return
    for target in ("keras", "torch", "numpy"):
        ast.parse(layerdsl.compile(model, target))
    live = layerdsl.build(model, target="numpy")
    x = testing.random_input(model, batch=2, padding="random")
    outputs = testing.outputs_of(testing.run("numpy", live, model, x))
    assert len(outputs) == len(model.outputs)
    for y, shape in zip(outputs, model.output_shapes, strict=True):
        assert y.shape == (2, *shape)
        assert y.dtype == np.float32
