"""The torch backend computes what Keras computes, given the same canonical weights.

The oracle is the same network built here directly from ``keras.layers`` (Keras
layout is the canonical layout), never through layerdsl's own backends.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import specs
from layerdsl.backends import torch_backend

torch = pytest.importorskip("torch")

ATOL, RTOL = 1e-5, 1e-4
ROOT = Path(__file__).resolve().parent.parent
MNIST = str(ROOT / "examples" / "mnist_convnet.layers")


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


def random_weights(model: layerdsl.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Non-trivial canonical weights: random kernels, gammas, betas and moving statistics."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in model.layers:
        for w in layer.weights:
            if w.name == "moving_variance":
                array = rng.uniform(0.5, 2.0, w.shape)
            elif w.name == "gamma":
                array = rng.uniform(0.5, 1.5, w.shape)
            else:
                array = rng.normal(0.0, 0.5, w.shape)
            out[f"{layer.name}.{w.name}"] = array.astype(np.float32)
    return out


def keras_layer(keras, layer: layerdsl.Layer):
    a = layer.args
    if layer.kind == "dense":
        return keras.layers.Dense(a["units"], use_bias=a["bias"], activation=a["activation"])
    if layer.kind == "conv2d":
        return keras.layers.Conv2D(
            a["filters"], a["kernel"], strides=a["stride"], padding=a["pad"], dilation_rate=a["dilation"],
            use_bias=a["bias"], activation=a["activation"],
        )  # fmt: skip
    if layer.kind == "maxpool":
        return keras.layers.MaxPooling2D(a["pool"], strides=a["stride"], padding=a["pad"])
    if layer.kind == "avgpool":
        return keras.layers.AveragePooling2D(a["pool"], strides=a["stride"], padding=a["pad"])
    if layer.kind == "flatten":
        return keras.layers.Flatten()
    if layer.kind == "dropout":
        return keras.layers.Dropout(a["rate"])
    if layer.kind == "batchnorm":
        return keras.layers.BatchNormalization(
            epsilon=a["eps"], momentum=a["momentum"], center=a["center"], scale=a["scale"]
        )
    if layer.kind == "activation":
        return keras.layers.Activation(a["function"])
    raise AssertionError(f"no Keras oracle for {layer.kind}")


def keras_oracle(keras, model: layerdsl.Model, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    layers = [keras_layer(keras, layer) for layer in model.layers]
    net = keras.Sequential([keras.Input(model.input.shape), *layers])
    for layer, klayer in zip(model.layers, layers, strict=True):
        if layer.weights:
            klayer.set_weights([weights[f"{layer.name}.{w.name}"] for w in layer.weights])
    return np.asarray(net(x, training=False))


def to_torch(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))


def from_torch(y) -> np.ndarray:
    y = y.detach().numpy()
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def assert_matches_keras(keras, text: str, seed: int = 0) -> None:
    model = layerdsl.parse(text)
    weights = random_weights(model, seed)
    net = layerdsl.build(model, target="torch").eval()
    layerdsl.set_weights(net, weights)
    x = np.random.default_rng(seed + 1).normal(size=(3, *model.input.shape)).astype(np.float32)
    with torch.no_grad():
        got = from_torch(net(to_torch(x)))
    np.testing.assert_allclose(got, keras_oracle(keras, model, weights, x), atol=ATOL, rtol=RTOL)


CASES = {
    "dense": "dense 7 in=5",
    "dense_no_bias_tanh": "dense 7 in=5 bias=false activation=tanh",
    "dense_on_sequences": "input 4x6\ndense 3 activation=relu\nbatchnorm\nsoftmax",
    "dropout_eval_identity": "dense 6 in=4\ndropout 0.5\ndense 2",
    "conv_valid": "input 7x8x3\nconv2d 4 3",
    "conv_same": "input 7x8x3\nconv2d 4 3 pad=same",
    "conv_same_even_kernel": "input 7x8x3\nconv2d 4 4x2 pad=same",
    "conv_same_stride2_odd": "input 7x9x3\nconv2d 4 3 stride=2 pad=same",
    "conv_same_stride2_even": "input 8x6x3\nconv2d 4 3 stride=2 pad=same",
    "conv_same_stride3": "input 7x8x3\nconv2d 4 2x4 stride=3 pad=same",
    "conv_valid_stride2_no_bias": "input 9x8x3\nconv2d 4 3 stride=2x1 bias=false",
    "conv_same_dilation": "input 9x8x3\nconv2d 4 3 dilation=2 pad=same",
    "conv_valid_dilation": "input 9x8x3\nconv2d 4 2 dilation=2x3",
    "maxpool_valid": "input 7x8x3\nmaxpool 2",
    "maxpool_valid_stride": "input 7x8x3\nmaxpool 2x3 stride=1x2",
    "maxpool_same_asymmetric": "input 7x8x3\nmaxpool 2 pad=same",
    "maxpool_same_symmetric": "input 7x8x3\nmaxpool 3 stride=1 pad=same",
    "maxpool_same_stride2": "input 7x8x3\nmaxpool 3 stride=2 pad=same",
    "avgpool_valid": "input 7x8x3\navgpool 2",
    "avgpool_same_asymmetric": "input 7x8x3\navgpool 2 pad=same",
    "avgpool_same_symmetric": "input 7x8x3\navgpool 3 stride=1 pad=same",
    "avgpool_same_wide": "input 7x8x3\navgpool 4 stride=1 pad=same",
    "avgpool_same_stride3": "input 7x8x3\navgpool 3x2 stride=3 pad=same",
    "flatten_dense": "input 4x5x3\nflatten\ndense 6",
    "flatten_dropout_batchnorm_dense": "input 4x5x3\nflatten\ndropout 0.2\nbatchnorm\nrelu\ndense 6",
    "flatten_at_output": "input 4x5x3\nconv2d 2 2\nflatten",
    "flatten_batchnorm_softmax_output": "input 4x5x3\nflatten\nbatchnorm center=false\nsoftmax",
    "batchnorm_vectors": "input 6\nbatchnorm eps=0.01 momentum=0.9",
    "batchnorm_images": "input 4x5x3\nbatchnorm",
    "batchnorm_no_center": "input 4x5x3\nbatchnorm center=false",
    "batchnorm_no_scale": "input 6\nbatchnorm scale=false",
    "batchnorm_neither": "input 4x5x3\nbatchnorm center=false scale=false",
    "names_that_clash_with_nn_module": "input 6\ndense 4 name=forward\nbatchnorm name=training\ndense 2 name=_x",
    "channels_first_input": "input 3x5x6 layout=channels_first\nconv2d 2 3 pad=same",
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_layer_matches_keras(keras, text):
    assert_matches_keras(keras, text)


@pytest.mark.parametrize("function", specs.ACTIVATIONS)
def test_activation_matches_keras(keras, function):
    fused = f"input 4x5x3\nconv2d 3 2 activation={function}\nflatten\ndense 5 activation={function}"
    assert_matches_keras(keras, f"{fused}\nactivation {function}")
    assert_matches_keras(keras, f"input 4x5x3\n{function}")


def test_mnist_convnet_matches_keras_and_counts_parameters(keras):
    model = layerdsl.load(MNIST)
    net = layerdsl.build(model, target="torch")
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == model.trainable_params == 34_826
    assert_matches_keras(keras, model.source_text)


@pytest.mark.parametrize(
    "text",
    [
        "input 4x5x3\nbatchnorm center=false\nflatten\nbatchnorm scale=false\ndense 3",
        "input 6\nbatchnorm center=false scale=false\nbatchnorm",
        MNIST,
    ],
)
def test_trainable_parameters_equal_keras(text):
    model = layerdsl.load(text) if text.endswith(".layers") else layerdsl.parse(text)
    net = layerdsl.build(model, target="torch")
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == model.trainable_params
    assert sum(p.numel() for p in net.parameters()) == model.trainable_params  # nothing frozen in disguise


def test_weights_round_trip_exactly():
    text = "input 4x5x3\nconv2d 4 3 pad=same\nflatten\ndropout 0.1\nbatchnorm center=false\ndense 3\nbatchnorm"
    model = layerdsl.parse(text)
    weights = random_weights(model, seed=3)
    net = layerdsl.build(model, target="torch")
    layerdsl.set_weights(net, weights)
    back = layerdsl.get_weights(net)
    assert list(back) == model.weight_names()
    for key, array in weights.items():
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], array, err_msg=key)


def test_flatten_permutation_is_folded_into_the_dense_kernel():
    net = layerdsl.build("input 2x2x3\nflatten\ndense 1 bias=false", target="torch")
    kernel = np.arange(12, dtype=np.float32).reshape(12, 1)  # row k weights Keras feature k = (h, w, c)
    layerdsl.set_weights(net, {"dense.kernel": kernel})
    x = np.zeros((1, 2, 2, 3), np.float32)
    x[0, 1, 0, 2] = 1.0  # Keras feature (1 * 2 + 0) * 3 + 2 = 8
    assert net(to_torch(x)).item() == 8.0


@pytest.mark.parametrize(
    ("text", "expected_std", "limit"),
    [
        ("dense 400 in=600 init=he_normal", (2 / 600) ** 0.5, None),
        ("dense 400 in=600", None, (6 / 1000) ** 0.5),  # glorot_uniform
        ("input 6x6x64\nconv2d 96 3 init=lecun_normal", (1 / 576) ** 0.5, None),
        ("input 6x6x64\nconv2d 96 3 init=he_uniform", None, (6 / 576) ** 0.5),
        ("dense 400 in=600 init=normal", 0.05, None),
        ("dense 400 in=600 init=uniform", None, 0.05),
    ],
)
def test_initializers_draw_from_keras_distributions(text, expected_std, limit):
    torch.manual_seed(0)
    model = layerdsl.parse(text)
    kernel = layerdsl.get_weights(layerdsl.build(model, target="torch"))[model.layers[0].name + ".kernel"]
    if limit is not None:
        assert np.abs(kernel).max() <= limit
        assert np.abs(kernel).max() > 0.99 * limit
        expected_std = limit / 3**0.5
    assert kernel.std() == pytest.approx(expected_std, rel=0.03)
    if "init=normal" not in text and limit is None:  # truncated at two Keras standard deviations
        assert np.abs(kernel).max() <= 2 * expected_std / 0.87962566103423978


def test_constant_and_orthogonal_initializers():
    model = layerdsl.parse("dense 40 in=60 init=orthogonal bias_init=ones\nbatchnorm")
    w = layerdsl.get_weights(layerdsl.build(model, target="torch"))
    np.testing.assert_allclose(w["dense.kernel"].T @ w["dense.kernel"], np.eye(40), atol=1e-5)
    np.testing.assert_array_equal(w["dense.bias"], np.ones(40, np.float32))
    np.testing.assert_array_equal(w["batch_normalization.gamma"], np.ones(40, np.float32))
    np.testing.assert_array_equal(w["batch_normalization.moving_mean"], np.zeros(40, np.float32))


def norms(kernel: np.ndarray, axis) -> np.ndarray:
    return np.sqrt(np.square(kernel).sum(axis=axis))


def test_apply_constraints_projects_onto_keras_max_norm():
    model = layerdsl.parse("input 6x6x3\nconv2d 8 3 maxnorm=1.5\nflatten\ndense 10 maxnorm=2.0")
    net = layerdsl.build(model, target="torch")
    weights = random_weights(model)
    weights["conv2d.kernel"][..., :4] *= 100.0  # filters 0-3 far over the limit, 4-7 under it
    weights["conv2d.kernel"][..., 4:] *= 1.0 / norms(weights["conv2d.kernel"][..., 4:], (0, 1, 2))
    weights["dense.kernel"][:, :5] *= 100.0
    weights["dense.kernel"][:, 5:] *= 0.5 / norms(weights["dense.kernel"][:, 5:], 0)
    layerdsl.set_weights(net, weights)
    net.apply_constraints()
    after = layerdsl.get_weights(net)

    conv_norms = norms(after["conv2d.kernel"], (0, 1, 2))
    np.testing.assert_allclose(conv_norms[:4], 1.5, rtol=1e-6)
    np.testing.assert_allclose(after["conv2d.kernel"][..., 4:], weights["conv2d.kernel"][..., 4:], atol=1e-6)
    dense_norms = norms(after["dense.kernel"], 0)
    np.testing.assert_allclose(dense_norms[:5], 2.0, rtol=1e-6)
    np.testing.assert_allclose(after["dense.kernel"][:, 5:], weights["dense.kernel"][:, 5:], atol=1e-6)
    np.testing.assert_array_equal(after["dense.bias"], weights["dense.bias"])


def test_apply_constraints_only_when_a_layer_has_maxnorm():
    assert "apply_constraints" not in layerdsl.compile("dense 3 in=4", "torch")
    assert not hasattr(layerdsl.build("dense 3 in=4", target="torch"), "apply_constraints")


def test_generated_source_is_standalone_and_commented():
    model = layerdsl.load(MNIST)
    source = layerdsl.compile(model, "torch")
    tree = ast.parse(source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"torch"}
    assert "import torch.nn.functional" not in source  # only imported where used
    assert "class MnistConvnet(nn.Module):" in source
    assert "def build_model() -> MnistConvnet:" in source
    for layer in model.layers:
        assert f"# line {layer.span.line}: {layer.source} -> " in source
    assert "# line 4: conv2d 32 3 -> (N, 32, 26, 26)" in source  # shapes in torch layout
    namespace: dict = {}
    exec(compile(source, "<generated>", "exec"), namespace)  # runs with only torch
    assert isinstance(namespace["build_model"](), torch.nn.Module)


def test_functional_import_only_when_used():
    assert "import torch.nn.functional as F" in layerdsl.compile("dense 3 in=4 activation=gelu", "torch")


def test_compile_does_not_import_torch():
    code = (
        "import sys, layerdsl\n"
        "layerdsl.compile(open('examples/mnist_convnet.layers').read(), 'torch')\n"
        "assert 'torch' not in sys.modules, 'compile imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_layer_kind_has_an_emitter():
    backend = torch_backend.TorchBackend()
    for kind in specs.layer_kinds():
        assert kind in backend.emitters or kind in backend.unsupported, kind


def test_owns_only_torch_modules():
    backend = torch_backend.TorchBackend()
    assert backend.owns(layerdsl.build("dense 3 in=4", target="torch"))
    assert not backend.owns(object())
