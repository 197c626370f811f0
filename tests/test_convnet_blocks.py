"""Modern convnet blocks: grouped convolution, hard activations, broadcasting merges,
arithmetic in block arguments, preprocessing and per-channel layers (issue 11)."""

from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import LayerCheckError, testing


def _agree(text: str) -> None:
    targets = testing.available_targets()
    if len(targets) < 2:
        pytest.skip("needs torch or keras installed to compare against")
    testing.assert_backends_agree(text, targets, batch=2)


# --- grouped convolution --------------------------------------------------------------------

GROUPED = {
    "conv2d_groups": "input 7x7x8\nconv2d 12 3 groups=4 pad=1 stride=2 | relu\nconv2d 6 1 groups=2 bias=false",
    "conv2d_groups_same": "input 6x5x6\nconv2d 9 3 groups=3 pad=same dilation=2 activation=hard_swish",
    "conv1d_groups": "input 9x6\nconv1d 4 3 groups=2 pad=causal | conv1d 8 2 groups=4 pad=same",
}


@pytest.mark.parametrize("text", GROUPED.values(), ids=GROUPED.keys())
def test_grouped_convolutions_agree_across_backends(text):
    _agree(text)


def test_grouped_kernel_holds_in_over_groups_channels_per_filter():
    model = layerdsl.parse("input 8x8x64\nconv2d 128 3 groups=32 bias=false")
    (kernel,) = model.layers[0].weights
    assert kernel.shape == (3, 3, 2, 128)
    assert model.total_params == 3 * 3 * 2 * 128


def test_grouped_counts_equal_keras_and_torch():
    text = "input 8x8x64\nconv2d 128 3 groups=32 pad=same"
    model = layerdsl.parse(text)
    if "keras" in testing.available_targets():
        assert layerdsl.build(model, target="keras").count_params() == model.total_params == 3 * 3 * 2 * 128 + 128
    if "torch" in testing.available_targets():
        net = layerdsl.build(model, target="torch")
        assert sum(p.numel() for p in net.parameters()) == model.total_params


@pytest.mark.parametrize(
    ("text", "column"),
    [("input 8x8x6\nconv2d 8 3 groups=4", 19), ("input 8x8x6\nconv2d 9 3 groups=2", 19)],
)
def test_groups_that_do_not_divide_the_channels_are_refused_at_the_option(text, column):
    with pytest.raises(LayerCheckError, match="groups=") as info:
        layerdsl.parse(text)
    assert (info.value.span.line, info.value.span.column) == (2, column)


# --- broadcasting merges and keepdims -------------------------------------------------------

SQUEEZE_EXCITE = (
    "input 6x5x8\nconv2d 8 3 pad=same | batchnorm | hard_swish\n"
    "multiply { } { globalavgpool keepdims=true | conv2d 2 1 | relu | conv2d 8 1 | hard_sigmoid }\n"
    "conv2d 4 1"
)

BROADCASTING = {
    "squeeze_excite": SQUEEZE_EXCITE,
    "vector_scales_map": "input 4x5x6\nmultiply { } { globalavgpool | dense 6 | sigmoid }",
    "vector_shifts_map": "input 4x5x6\nadd { globalmaxpool | dense 6 } { }",
    "row_average": "input 4x5x6\naverage { } { globalavgpool | dense 6 } { conv2d 6 1 }",
    "sequence_gate": "input 7x4\nmultiply { } { globalavgpool1d keepdims=true | dense 4 | sigmoid }",
    "sequence_vector": "input 7x4\nadd { globalmaxpool1d | dense 4 } { conv1d 4 3 pad=same }",
    "keepdims_pools": "input 6x6x3\nglobalmaxpool keepdims=true | conv2d 4 1 | flatten",
    "height_row": "input 4x5x6\nadd { } { reshape 120 | dense 30 | reshape 1x5x6 }",
    "width_channels": "input 4x5x6\nmultiply { } { reshape 120 | dense 30 | reshape 5x6 }",
    "subtract_mean": "input 4x5x6\nsubtract { } { globalavgpool keepdims=true }",
    "subtract_vector": "input 7x4\nsubtract { globalmaxpool1d } { }",
    "extrema": "input 4x5x6\nmaximum { } { globalavgpool | dense 6 } { conv2d 6 1 }\nminimum { globalmaxpool } { }",
}


@pytest.mark.parametrize("text", BROADCASTING.values(), ids=BROADCASTING.keys())
def test_broadcasting_merges_agree_across_backends(text):
    _agree(text)


def test_squeeze_excite_gates_each_channel_by_its_own_factor():
    model = layerdsl.parse(SQUEEZE_EXCITE)
    gate = next(layer for layer in model.layers if layer.kind == "multiply")
    assert gate.input_shapes == ((6, 5, 8), (1, 1, 8))
    assert gate.output_shape == (6, 5, 8)


def test_global_pools_keep_their_axes_on_request():
    model = layerdsl.parse("input 6x6x3\nglobalavgpool keepdims=true\nglobalmaxpool keepdims=false")
    assert [layer.output_shape for layer in model.layers] == [(1, 1, 3), (3,)]
    model = layerdsl.parse("input 6x3\nglobalavgpool1d keepdims=true")
    assert model.layers[0].output_shape == (1, 3)


def test_shapes_that_do_not_broadcast_are_refused():
    with pytest.raises(LayerCheckError, match="needs inputs of one shape"):
        layerdsl.parse("input 4x5x6\nmultiply { } { globalavgpool | dense 5 }")


def test_broadcast_shapes_are_numpys():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    from layerdsl.specs import broadcast_shape

    shapes = st.lists(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=3).map(tuple), min_size=2, max_size=4)

    @hypothesis.given(shapes)
    @hypothesis.settings(max_examples=300, deadline=None)
    def check(listed):
        try:
            expected = np.broadcast_shapes(*listed)
        except ValueError:
            expected = None
        assert broadcast_shape(tuple(listed)) == expected

    check()


# --- arithmetic in block arguments ------------------------------------------------------------

BOTTLENECK = """input 8x8x16
block bottleneck c stride=1 {
  residual { conv2d c 1 | batchnorm | relu | conv2d c 3 stride=stride pad=same | conv2d c*4 1 } { conv2d c*4 1 stride=stride }
}
block se r=4 {
  multiply { } { globalavgpool keepdims=true | conv2d max(1,in_channels//r) 1 | relu | conv2d in_channels 1 | hard_sigmoid }
}
block head c { conv2d channels*2 1 | globalavgpool | reshape 1x1x(c*2) | reshape 1x1xc*2 }
bottleneck 8 stride=2
se
head 32
"""


def test_expressions_compute_sizes_from_block_parameters_and_channels():
    model = layerdsl.parse(BOTTLENECK.replace(" | reshape 1x1xc*2", ""))
    shapes = {layer.written: layer.output_shape for layer in model.layers}
    assert shapes["conv2d c*4 1"] == (4, 4, 32)
    assert shapes["conv2d max(1,in_channels//r) 1"] == (1, 1, 8)  # in_channels: what the block reads
    assert shapes["conv2d in_channels 1"] == (1, 1, 32)
    assert shapes["conv2d channels*2 1"] == (4, 4, 64)  # channels: what the statement reads
    assert shapes["reshape 1x1x(c*2)"] == (1, 1, 64)
    calls = [node for node in model.body if hasattr(node, "args")]
    assert [dict(call.args) for call in calls] == [{"c": 8, "stride": 2}, {"r": 4}, {"c": 32}]


def test_expression_models_agree_across_backends():
    _agree(BOTTLENECK.replace(" | reshape 1x1xc*2", ""))


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("input 8x8x3\nblock b c { conv2d c*k 1 }\nb 4", "unknown name `k` in an expression", (2, 22)),
        ("input 8x8x3\nblock b c { conv2d 4//(c-4) 1 }\nb 4", "division by zero: the right side of `//` is 0", (2, 21)),
        ("input 8x8x3\nblock b c { conv2d 4%(c-c) 1 }\nb 4", "division by zero: the right side of `%` is 0", (2, 21)),
        ("input 8x8x3\nblock b c { conv2d c+1 1 }\nb relu", "`c` is `relu` here, but an expression needs an integer", (2, 20)),
        ("input 8x8x3\nblock b c { conv2d c*2 1 }\nb 0.5", "`c` is `0.5` here, but an expression needs an integer", (2, 20)),
        ("input 8x8x3\nblock b c { reshape 1x1x(c) }\nb 2x2", "`c` is `2x2` here, but an expression needs an integer", (2, 26)),
        ("input 8x8x3\nblock b c { conv2d c*c*c 1 }\nb 99999", "the expression reaches 9,999,800,001, beyond 2,147,483,647", (2, 21)),
        ("input 8x8x3\nconv2d 3/2 1", "`/` divides into fractions; sizes are integers", (2, 9)),
        ("input 8x8x3\nconv2d foo(3) 1", "unknown function `foo`", (2, 8)),
        ("input 8x8x3\nconv2d (3+ 1", "unexpected character `(`", (2, 8)),
    ],
)
def test_bad_expressions_are_reported_at_the_column_to_blame(text, message, where):
    with pytest.raises(layerdsl.LayerDSLError) as info:
        layerdsl.parse(text)
    error = info.value
    assert error.message == message
    assert (error.span.line, error.span.column) == where


def test_a_block_default_cannot_be_an_expression():
    with pytest.raises(LayerCheckError, match="must be a value, not an expression"):
        layerdsl.parse("input 4\nblock b c=2*3 { dense c }\nb")


def _expression_strategy():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    leaves = st.one_of(st.integers(0, 40).map(str), st.sampled_from(["a", "b", "in_channels"]))

    def grow(children):
        binary = st.tuples(children, st.sampled_from(["+", "-", "*", "//", "%"]), children).map(
            lambda t: f"({t[0]}{t[1]}{t[2]})"
        )
        calls = st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({','.join(t[1])})"
        )
        return st.one_of(binary, calls, children.map(lambda c: f"-({c})"))

    return st.recursive(leaves, grow, max_leaves=8).filter(lambda text: _depth(text) <= 4)


def _depth(text):
    deepest = depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
    return deepest


def test_expressions_evaluate_as_python_integer_arithmetic():
    hypothesis = pytest.importorskip("hypothesis")
    from layerdsl import expressions

    values = {"a": 7, "b": -3, "in_channels": 12}

    @hypothesis.given(_expression_strategy())
    @hypothesis.settings(max_examples=400, deadline=None)
    def check(text):
        tree = expressions.parse(text)
        try:
            expected = eval(text, {"__builtins__": {}, "min": min, "max": max}, dict(values))  # the oracle: Python itself, on generated arithmetic
        except ZeroDivisionError:
            with pytest.raises(LayerCheckError, match="division by zero"):
                expressions.evaluate(tree, expressions.environment(values))
            return
        if abs(expected) > expressions.LIMIT:
            return
        try:
            got = expressions.evaluate(tree, expressions.environment(values))
        except LayerCheckError as exc:  # a value on the way out of range
            assert "beyond" in exc.message
            return
        assert got == expected
        assert expressions.evaluate(expressions.parse(expressions.text(tree)), expressions.environment(values)) == got

    check()


def test_fmt_round_trips_expressions():
    hypothesis = pytest.importorskip("hypothesis")
    from layerdsl.formatter import format_text

    @hypothesis.given(_expression_strategy(), _expression_strategy())
    @hypothesis.settings(max_examples=200, deadline=None)
    def check(first, second):
        text = f"input 8x8x4\nblock b a {{\n  conv2d {first} 1 stride={second}\n  reshape 1x1x({first})xa\n}}\nb 3\n"
        once = format_text(text)
        assert format_text(once) == once
        before = [v.source() for v in _values(text)]
        after = [v.source() for v in _values(once)]
        assert before == after

    check()


def _values(text):
    from layerdsl.parser import parse_syntax

    block = parse_syntax(text).statements[1]
    return [v for stmt in block.bodies[0] for v in (*stmt.positionals, *(o.value for o in stmt.options))]


# --- preprocessing and per-channel layers ---------------------------------------------------

PREPROCESSING = {
    "rescaling": "input 5x4x3\nrescaling 0.00392156862745098 offset=-0.5 | conv2d 2 1",
    "normalization_weights": "input 5x4x3\nnormalization | conv2d 2 1 | flatten | normalization",
    "normalization_constants": "input 5x4x3\nnormalization mean=0.5 variance=0.25 | conv2d 2 1",
    "layerscale": "input 5x4x3\nconv2d 4 1 | layerscale | flatten | dense 3 | layerscale 0.5",
    "cropping2d": "input 7x6x2\ncropping2d 1 | cropping2d top=2 right=1 | conv2d 2 1",
    "cropping1d_upsample1d": "input 9x3\ncropping1d 2 | upsample1d 3 | cropping1d start=0 end=1 | conv1d 2 2",
}


@pytest.mark.parametrize("text", PREPROCESSING.values(), ids=PREPROCESSING.keys())
def test_preprocessing_and_per_channel_layers_agree_across_backends(text):
    _agree(text)


def test_normalization_counts_as_keras_does():
    learned = layerdsl.parse("input 8x8x3\nnormalization")
    assert (learned.total_params, learned.trainable_params) == (7, 0)
    fixed = layerdsl.parse("input 8x8x3\nnormalization mean=0.5 variance=0.25")
    assert fixed.total_params == 0
    if "keras" in testing.available_targets():
        assert layerdsl.build(learned, target="keras").count_params() == 7
        assert layerdsl.build(fixed, target="keras").count_params() == 0


def test_layerscale_saves_and_loads_under_keras_safe_mode(tmp_path):
    keras = pytest.importorskip("keras")
    model = layerdsl.parse("input 4x4x3\nconv2d 4 1 | layerscale")
    live = layerdsl.build(model, target="keras")
    assert live.count_params() == 3 * 4 + 4 + 4
    weights = testing.random_weights(model)
    layerdsl.set_weights(live, weights)
    live.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    x = testing.random_input(model)
    np.testing.assert_allclose(loaded(x), live(x), atol=1e-6)
    assert np.allclose(loaded.get_layer("layer_scale").get_weights()[0], weights["layer_scale.gamma"])


# --- the reference architectures -------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _conv(cin, cout, k, groups=1, bias=False):
    return cin // groups * cout * k * k + (cout if bias else 0)


def _torchvision_resnext50_32x4d():
    """Trainable parameters of torchvision.models.resnext50_32x4d(), from torchvision/models/resnet.py
    (Bottleneck, groups=32, width_per_group=4, layers [3, 4, 6, 3]). torchvision's PyPI wheels need the
    CUDA build of torch, so the count is computed from the source rather than from a live model."""
    total = _conv(3, 64, 7) + 2 * 64
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        width = int(planes * (4 / 64.0)) * 32
        for block in range(blocks):
            total += _conv(inplanes, width, 1) + _conv(width, width, 3, groups=32) + _conv(width, planes * 4, 1)
            total += 2 * (width + width + planes * 4)
            if block == 0:  # downsample: conv1x1 + batchnorm
                total += _conv(inplanes, planes * 4, 1) + 2 * planes * 4
            inplanes = planes * 4
    return total + 2048 * 1000 + 1000


def _make_divisible(value, divisor=8):
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _torchvision_mobilenet_v3_small():
    """Trainable parameters of torchvision.models.mobilenet_v3_small(), from torchvision/models/mobilenetv3.py."""
    config = [  # input, kernel, expanded, out, squeeze-excite
        (16, 3, 16, 16, True), (16, 3, 72, 24, False), (24, 3, 88, 24, False), (24, 5, 96, 40, True),
        (40, 5, 240, 40, True), (40, 5, 240, 40, True), (40, 5, 120, 48, True), (48, 5, 144, 48, True),
        (48, 5, 288, 96, True), (96, 5, 576, 96, True), (96, 5, 576, 96, True),
    ]
    total = _conv(3, 16, 3) + 2 * 16
    for cin, k, expanded, out, se in config:
        if expanded != cin:
            total += _conv(cin, expanded, 1) + 2 * expanded
        total += _conv(expanded, expanded, k, groups=expanded) + 2 * expanded
        if se:
            squeeze = _make_divisible(expanded // 4)
            total += _conv(expanded, squeeze, 1, bias=True) + _conv(squeeze, expanded, 1, bias=True)
        total += _conv(expanded, out, 1) + 2 * out
    total += _conv(96, 576, 1) + 2 * 576
    return total + 576 * 1024 + 1024 + 1024 * 1000 + 1000


@pytest.mark.parametrize(
    ("name", "reference", "trainable"),
    [
        ("resnext50", _torchvision_resnext50_32x4d, 25_028_904),
        ("mobilenet_v3_small", _torchvision_mobilenet_v3_small, 2_542_856),
    ],
)
def test_torchvision_architectures_have_torchvisions_trainable_count(name, reference, trainable):
    assert reference() == trainable
    model = layerdsl.load(EXAMPLES / f"{name}.layers")
    assert model.trainable_params == trainable
    if "torch" in testing.available_targets():
        net = layerdsl.build(model, target="torch")
        assert sum(p.numel() for p in net.parameters()) == trainable


def test_efficientnet_b0_counts_equal_keras_applications():
    keras = pytest.importorskip("keras")
    reference = keras.applications.EfficientNetB0(weights=None)
    trainable = sum(int(np.prod(w.shape)) for w in reference.trainable_weights)
    assert (reference.count_params(), trainable) == (5_330_571, 5_288_548)
    model = layerdsl.load(EXAMPLES / "efficientnet_b0.layers")
    assert (model.total_params, model.trainable_params, model.non_trainable_params) == (5_330_571, 5_288_548, 42_023)
    assert layerdsl.build(model, target="keras").count_params() == 5_330_571


@pytest.mark.parametrize("name", ["resnext50", "mobilenet_v3_small", "efficientnet_b0"])
def test_reference_architectures_agree_across_backends_at_a_reduced_size(name):
    text = (EXAMPLES / f"{name}.layers").read_text().replace("input 224x224x3", "input 64x64x3")
    # compare logits: a softmax over 1,000 classes squeezes every difference below the tolerance
    _agree(text.replace(" activation=softmax", ""))


def test_flattened_features_keep_their_order_through_per_feature_layers():
    # per_feature layers between flatten and dense: torch folds the (C, H, W) order into the weights
    _agree("input 3x4x5\nflatten | normalization | layerscale 0.5 | rescaling 2.0 offset=1.0 | dense 6")


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_grouped_convolutions_import_from_either_framework(framework):
    if framework not in testing.available_targets():
        pytest.skip(f"needs {framework}")
    text = "model grouped\ninput 6x6x8\nconv2d 12 3 groups=4 pad=same\nrelu\nconv2d 12 3 groups=12\n"
    model = layerdsl.parse(text)
    original = layerdsl.build(model, framework)
    layerdsl.set_weights(original, testing.random_weights(model))
    if framework == "keras":
        imported = layerdsl.from_keras(original)
    else:
        imported = layerdsl.from_torch(original, (8, 6, 6))
    assert [layer.args["groups"] for layer in imported.model.layers if layer.kind == "conv2d"] == [4, 12]
    x = testing.random_input(model)
    live = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(live, imported.weights)
    np.testing.assert_allclose(live(x), testing.run(framework, original, model, x), atol=1e-5, rtol=1e-4)


def test_dims_words_split_as_the_grammar_reads_them():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    from layerdsl.parser import parse_syntax

    parts = st.one_of(st.integers(0, 9).map(str), st.text("xyc0_", min_size=1, max_size=5), st.just("(c*2)"))

    @hypothesis.given(st.lists(parts, min_size=2, max_size=4).map("x".join))
    @hypothesis.settings(max_examples=400, deadline=None)
    def check(word):
        try:
            program = parse_syntax(f"reshape {word}")
        except layerdsl.LayerDSLError:
            return  # a clean diagnostic
        for value in program.statements[0].positionals:
            assert value.source()  # every value reads back

    check()
