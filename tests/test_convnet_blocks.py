"""Modern convnet blocks: grouped convolution, hard activations, broadcasting merges,
arithmetic in block arguments, preprocessing and per-channel layers (issue 11)."""

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
    np = pytest.importorskip("numpy")
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
