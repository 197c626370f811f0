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
