"""`attention`: Keras's MultiHeadAttention in the language, every backend and both importers.

Parameter counts against a Keras reference built here; outputs of Keras, PyTorch, NumPy and ONNX
agree after weight transfer (float32, atol 1e-5, rtol 1e-4); masks and causal attention as Keras
applies them; weights round-trip between Keras and torch; bad input is a located error.
"""

import numpy as np
import pytest

import layerdsl
from layerdsl import LayerDSLError, testing

TARGETS = testing.available_targets()

CASES = {
    "self": "input 7x16\nattention 4 4",
    # keras-io's text transformer: key_dim = embed_dim, not embed_dim / heads
    "key_dim_is_width": "input 6x32\nattention 2 32",
    "value_dim": "input 5x12\nattention 3 5 value_dim=7",
    "no_bias": "input 6x8\nattention 2 4 bias=false",
    "no_bias_generated": "input 6x8\nattention 2 3 bias=false",
    "cross_other_length_and_width": "input 9x10\ntap memory\nconv1d 12 4 stride=2\nattention 3 4 @memory",
    "cross_generated": "input 9x10\ntap memory\nconv1d 12 4 stride=2\nattention 2 5 value_dim=3 @memory",
    "causal": "input 8x12\nattention 3 4 causal=true",
    "causal_generated": "input 8x12\nattention 2 6 value_dim=5 causal=true",
    "dropout_is_inactive": "input 6x8\nattention 2 4 dropout=0.3 | layernorm",
}


def _keras_reference(query_shape, memory_shape, **kwargs):
    keras = pytest.importorskip("keras")
    query = keras.Input(shape=query_shape)
    memory = keras.Input(shape=memory_shape) if memory_shape else query
    layer = keras.layers.MultiHeadAttention(**kwargs)
    layer(query, memory)
    return layer.count_params()


@pytest.mark.parametrize(
    ("text", "query", "memory", "kwargs"),
    [
        ("input 10x32\nattention 2 32", (10, 32), None, {"num_heads": 2, "key_dim": 32}),
        ("input 7x16\nattention 4 4", (7, 16), None, {"num_heads": 4, "key_dim": 4}),
        ("input 5x12\nattention 3 5 value_dim=7", (5, 12), None, {"num_heads": 3, "key_dim": 5, "value_dim": 7}),
        ("input 6x8\nattention 2 4 bias=false", (6, 8), None, {"num_heads": 2, "key_dim": 4, "use_bias": False}),
        (
            "input 9x10\ntap memory\nconv1d 12 4 stride=2\nattention 3 4 @memory",
            (3, 12),
            (9, 10),
            {"num_heads": 3, "key_dim": 4},
        ),
    ],
)
def test_parameter_count_is_keras_multiheadattention_count(text, query, memory, kwargs):
    layer = layerdsl.parse(text).layers[-1]
    assert layer.kind == "attention"
    assert layer.params == _keras_reference(query, memory, **kwargs)


def test_keras_io_text_transformer_attention_has_8416_parameters():
    layer = layerdsl.parse("input 200x32\nattention 2 32").layers[0]
    assert layer.params == 8_416
    assert [w.shape for w in layer.weights] == [(32, 2, 32), (2, 32)] * 3 + [(2, 32, 32), (32,)]


def test_cross_attention_weights_read_the_memory_width_and_keep_the_query_shape():
    model = layerdsl.parse("input 9x10\ntap memory\nconv1d 12 4 stride=2\nattention 3 4 value_dim=5 @memory")
    layer = model.layers[-1]
    assert layer.inputs == ("conv1d", "input")
    assert layer.output_shape == (3, 12)
    shapes = {w.name: w.shape for w in layer.weights}
    assert shapes["query_kernel"] == (12, 3, 4)
    assert shapes["key_kernel"] == (10, 3, 4)
    assert shapes["value_kernel"] == (10, 3, 5)
    assert shapes["output_kernel"] == (3, 5, 12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_backends_agree(case):
    if len(TARGETS) < 2:
        pytest.skip("needs another backend to compare against")
    testing.assert_backends_agree(CASES[case], batch=3)


def _torch_source(text):
    return layerdsl.compile(layerdsl.parse(text), "torch")


def test_torch_uses_nn_multiheadattention_where_it_computes_the_layer():
    source = _torch_source(CASES["self"])
    assert "nn.MultiheadAttention(16, 4, batch_first=True)" in source
    assert "need_weights=False" in source
    assert "class MultiHeadAttention" not in source
    cross = _torch_source(CASES["cross_other_length_and_width"])
    assert "nn.MultiheadAttention(12, 3, kdim=10, vdim=10, batch_first=True)" in cross


@pytest.mark.parametrize("case", ["key_dim_is_width", "value_dim", "no_bias_generated", "cross_generated"])
def test_torch_writes_its_own_attention_module_where_nn_multiheadattention_cannot(case):
    source = _torch_source(CASES[case])
    assert "class MultiHeadAttention(nn.Module):" in source
    assert "nn.MultiheadAttention" not in source


MASKED = "input 9 dtype=int32\nembedding 40 8 mask_zero=true\nattention 2 4"


@pytest.mark.parametrize("text", [MASKED, MASKED + " causal=true", MASKED.replace("2 4", "2 6 value_dim=3")])
def test_masked_keys_get_no_weight_at_every_unmasked_position(text):
    if "keras" not in TARGETS:
        pytest.skip("needs keras for the reference")
    model = layerdsl.parse(text)
    x = testing.random_input(model, batch=4, seed=3)
    assert (x == 0).any()
    result = testing.compare(model, x=x)
    unmasked = x != 0
    reference = result.outputs["keras"][unmasked]
    for target, y in result.outputs.items():
        np.testing.assert_allclose(y[unmasked], reference, atol=testing.ATOL, rtol=testing.RTOL, err_msg=target)
    # without the mask the unmasked positions would differ: the mask is what the test proves
    plain = testing.compare(text.replace(" mask_zero=true", ""), ["numpy"], x=x, weights=testing.random_weights(model))
    assert not np.allclose(plain.outputs["numpy"][unmasked], reference, atol=1e-3)


@pytest.mark.parametrize("padding", ["pre", "post", "random"])
def test_masked_attention_then_masked_pool_agrees_everywhere(padding):
    testing.assert_backends_agree(MASKED + "\nattention 4 2 causal=true\nglobalavgpool1d", batch=4, padding=padding)


def test_cross_attention_with_a_shared_mask_agrees():
    text = "input 8 dtype=int32\nembedding 30 6 mask_zero=true\ntap memory\ndense 10\nattention 2 3 @memory\nglobalavgpool1d"
    testing.assert_backends_agree(text, batch=4)


def test_attention_output_keeps_the_query_mask():
    model = layerdsl.parse(MASKED + "\nglobalavgpool1d")
    attention, pool = model.layers[1:]
    assert attention.input_masked and attention.output_masked
    assert pool.input_masked


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("text", [CASES["causal"], CASES["causal_generated"], MASKED + " causal=true"])
def test_causal_output_at_t_ignores_later_inputs(target, text):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, target=target)
    layerdsl.set_weights(live, testing.random_weights(model, seed=5))
    rng = np.random.default_rng(7)
    for case in range(3):
        x = testing.random_input(model, batch=2, seed=11 + case)
        t = int(rng.integers(0, x.shape[1] - 1))
        changed = x.copy()
        later = changed[:, t + 1 :]
        changed[:, t + 1 :] = rng.integers(1, 40, later.shape) if x.dtype.kind == "i" else rng.normal(size=later.shape)
        before = testing.run(target, live, model, x)
        after = testing.run(target, live, model, changed)
        # (pre-padded ids: the later steps stay unmasked; outputs at masked queries are unspecified)
        kept = x[:, : t + 1] != 0 if x.dtype.kind == "i" else np.ones((len(x), t + 1), dtype=bool)
        np.testing.assert_allclose(after[:, : t + 1][kept], before[:, : t + 1][kept], atol=1e-6, rtol=1e-5)
        assert not np.allclose(after[:, t + 1 :], before[:, t + 1 :])  # later positions do see them


@pytest.mark.parametrize("case", ["self", "value_dim", "cross_other_length_and_width", "no_bias"])
def test_weights_round_trip_keras_torch_keras(case):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    model = layerdsl.parse(CASES[case])
    keras_model = layerdsl.build(model, target="keras")
    weights = testing.random_weights(model, seed=2)
    layerdsl.set_weights(keras_model, weights)
    torch_model = layerdsl.build(model, target="torch")
    layerdsl.set_weights(torch_model, layerdsl.get_weights(keras_model))
    back = layerdsl.build(model, target="keras")
    layerdsl.set_weights(back, layerdsl.get_weights(torch_model))
    for key, value in weights.items():
        np.testing.assert_array_equal(layerdsl.get_weights(back)[key], value, err_msg=key)


def test_torch_in_proj_weight_is_query_key_value_stacked():
    torch = pytest.importorskip("torch")
    model = layerdsl.parse("input 5x8\nattention 2 4")
    weights = testing.random_weights(model)
    live = layerdsl.build(model, target="torch")
    layerdsl.set_weights(live, weights)
    attention = next(m for m in live.modules() if isinstance(m, torch.nn.MultiheadAttention))
    w_q, w_k, w_v = attention.in_proj_weight.detach().numpy().reshape(3, 8, 8)
    np.testing.assert_array_equal(w_q.T.reshape(8, 2, 4), weights["multi_head_attention.query_kernel"])
    np.testing.assert_array_equal(w_v.T.reshape(8, 2, 4), weights["multi_head_attention.value_kernel"])
    np.testing.assert_array_equal(
        attention.in_proj_bias.detach().numpy()[8:16].reshape(2, 4), weights["multi_head_attention.key_bias"]
    )
    w_o = attention.out_proj.weight.detach().numpy()
    np.testing.assert_array_equal(w_o.T.reshape(2, 4, 8), weights["multi_head_attention.output_kernel"])
    assert w_k.shape == (8, 8)


def test_keras_source_calls_the_layer_on_query_and_memory():
    source = layerdsl.compile(layerdsl.parse(CASES["cross_other_length_and_width"] + " causal=false dropout=0.1"), "keras")
    assert "layers.MultiHeadAttention(num_heads=3, key_dim=4, dropout=0.1, name=" in source
    assert "x, inputs" in source  # the memory is the model input
    causal = layerdsl.compile(layerdsl.parse(CASES["causal"]), "keras")
    assert "inputs, inputs, use_causal_mask=True" in causal


@pytest.mark.parametrize(
    "text",
    [CASES["self"], CASES["value_dim"], CASES["cross_other_length_and_width"], CASES["causal"], MASKED + "\nglobalavgpool1d"],
)
def test_from_keras_reads_multiheadattention_back(text):
    pytest.importorskip("keras")
    model = layerdsl.parse(text)
    keras_model = layerdsl.build(model, target="keras")
    layerdsl.set_weights(keras_model, testing.random_weights(model, seed=4))
    imported = layerdsl.from_keras(keras_model)
    if "@" not in text:  # (a cross-attention's tap comes back named after the tensor: `@model_input`)
        assert imported.text.split("\n", 1)[1] == layerdsl.format_text(text).split("\n", 1)[1]
    layer = next(layer for layer in imported.model.layers if layer.kind == "attention")
    assert layer.args == next(layer for layer in model.layers if layer.kind == "attention").args
    assert imported.model.total_params == model.total_params
    x = testing.random_input(model, batch=2)
    numpy_model = layerdsl.build(imported.model, target="numpy")
    layerdsl.set_weights(numpy_model, imported.weights)
    np.testing.assert_allclose(numpy_model(x), np.asarray(keras_model(x)), atol=testing.ATOL, rtol=testing.RTOL)


def test_from_torch_reads_nn_multiheadattention_self_attention():
    pytest.importorskip("torch")
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.proj = nn.Linear(8, 3)

        def forward(self, x):
            return self.proj(self.attn(x, x, x, need_weights=False)[0])

    imported = _imported_from_torch_with_equal_outputs(Encoder().eval(), (5, 8), seed=0)
    assert "attention 2 4 name=attn" in imported.text


def _imported_from_torch_with_equal_outputs(module, shape, seed):
    """``from_torch(module)``, checked: the imported NumPy model computes the module's outputs."""
    import torch

    imported = layerdsl.from_torch(module, shape)
    x = np.random.default_rng(seed).normal(size=(3, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    numpy_model = layerdsl.build(imported.model, target="numpy")
    layerdsl.set_weights(numpy_model, imported.weights)
    np.testing.assert_allclose(numpy_model(x), expected, atol=testing.ATOL, rtol=testing.RTOL)
    return imported


def test_from_torch_reads_cross_attention_with_kdim():
    pytest.importorskip("torch")
    from torch import nn

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=6)

        def forward(self, x):
            return self.attn(self.proj(x), x, x, need_weights=False)[0]

    imported = _imported_from_torch_with_equal_outputs(Cross().eval(), (5, 6), seed=1)
    assert "attention 2 4 @" in imported.text


def test_from_torch_refuses_keys_and_values_from_different_tensors():
    pytest.importorskip("torch")
    from torch import nn

    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, self.proj(x), x, need_weights=False)[0]

    with pytest.raises(layerdsl.ModelImportError, match="keys and values"):
        layerdsl.from_torch(Split(), (5, 8))


#: Attention layers the torch backend writes as its own MultiHeadAttention module.
GENERATED = {
    **{c: CASES[c] for c in ("key_dim_is_width", "value_dim", "no_bias_generated", "cross_generated", "causal_generated")},
    "dropout_generated": "input 6x8\nattention 2 3 dropout=0.3",
}


@pytest.mark.parametrize("text", GENERATED.values(), ids=GENERATED)
def test_from_torch_reads_the_attention_module_the_torch_backend_writes(text):
    pytest.importorskip("torch")
    from layerdsl.backends.torch_backend import torch_shape

    model = layerdsl.parse(text)
    original = layerdsl.build(model, "torch")
    assert "class MultiHeadAttention" in layerdsl.compile(model, "torch")  # not nn.MultiheadAttention
    layerdsl.set_weights(original, testing.random_weights(model, seed=5))
    imported = layerdsl.from_torch(original, torch_shape(model.input.shape))
    assert layerdsl.parse(imported.text) == imported.model
    assert [y.kind for y in imported.model.layers] == [y.kind for y in model.layers]
    assert imported.model.layers[-1].args == model.layers[-1].args  # heads, widths, bias, causal
    assert imported.model.layers[-1].inputs[1:] == (("input",) if "@" in text else ())
    assert imported.model.total_params == model.total_params
    x = testing.random_input(model, batch=3)
    numpy_model = layerdsl.build(imported.model, target="numpy")
    layerdsl.set_weights(numpy_model, imported.weights)
    expected = testing.run("torch", original, model, x)
    np.testing.assert_allclose(numpy_model(x), expected, atol=testing.ATOL, rtol=testing.RTOL)


def _generated_attention_class():
    """The MultiHeadAttention class the torch backend writes into a generated file."""
    return type(layerdsl.build(layerdsl.parse(CASES["value_dim"]), "torch").multi_head_attention)


def test_from_torch_refuses_a_lookalike_of_the_generated_attention_module():
    pytest.importorskip("torch")
    from torch import nn

    class MultiHeadAttention(_generated_attention_class()):  # the same Linears and call, other outputs
        def forward(self, x, memory, mask=None, causal=False):
            return 2 * super().forward(x, memory, mask, causal)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiHeadAttention(12, 3, 5, 7)

        def forward(self, x):
            return self.attn(x, x)

    with pytest.raises(layerdsl.ModelImportError, match=r"'attn'.*computes something else"):
        layerdsl.from_torch(Encoder(), (5, 12))


def test_from_torch_refuses_masks_of_the_generated_attention_module():
    torch = pytest.importorskip("torch")
    from torch import nn

    from layerdsl.backends.torch_backend import torch_shape

    attention = _generated_attention_class()

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attention(12, 3, 5, 7)
            self.register_buffer("keep", torch.ones(2, 5, dtype=torch.bool))

        def forward(self, x):
            return self.attn(x, x, mask=self.keep)

    with pytest.raises(layerdsl.ModelImportError, match=r"'attn'.*mask is a tensor layerdsl does not read"):
        layerdsl.from_torch(Masked(), (5, 12))
    model = layerdsl.parse(MASKED.replace("2 4", "2 6 value_dim=3"))  # mask_zero's torch build: `mask = x != 0`
    with pytest.raises(layerdsl.ModelImportError, match=r"padding mask .* from_torch reads no masks"):
        layerdsl.from_torch(layerdsl.build(model, "torch"), torch_shape(model.input.shape))


# --- errors --------------------------------------------------------------------------------


def error_of(text):
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse(text, "m.layers")
    return info.value


def test_rank_3_input_is_an_error_with_a_hint():
    err = error_of("input 8x8x3\nattention 2 4")
    assert err.render().startswith("m.layers:2:1: error: `attention` needs a 2-D (timesteps x features) input")
    assert "patches" in err.render()


def test_vector_input_is_an_error_with_a_hint():
    err = error_of("input 16\nattention 2 4")
    assert err.render().startswith("m.layers:2:1: error:")
    assert "embedding" in err.render()


def test_unknown_tap_is_located():
    err = error_of("input 5x8\ntap memory\nattention 2 4 @memroy")
    assert err.render().startswith("m.layers:3:15: error: unknown tap `@memroy`")
    assert "memory" in err.render()


@pytest.mark.parametrize(("text", "col"), [("attention 0 4", 11), ("attention 2 -1", 13)])
def test_heads_and_key_dim_must_be_positive(text, col):
    err = error_of("input 5x8\n" + text)
    assert err.render().startswith(f"m.layers:2:{col}: error:")


def test_two_memories_are_an_error():
    err = error_of("input 5x8\ntap a\ntap b\nattention 2 4 @a @b")
    assert err.render().startswith("m.layers:4:18: error: `attention` reads at most one other tensor")


def test_causal_cross_attention_needs_a_memory_as_long_as_the_query():
    err = error_of("input 9x10\ntap memory\nconv1d 12 4 stride=2\nattention 3 4 @memory causal=true")
    assert "causal" in err.render() and "9" in err.render()


def test_a_masked_tensor_read_by_an_earlier_attention_is_refused():
    err = error_of("input 9 dtype=int32\nembedding 50 8 mask_zero=true\ntap memory\nattention 2 4\nattention 2 4 @memory")
    assert err.render().startswith("m.layers:5:1: error:")
    assert "deletes the mask" in err.render()


def test_cross_attention_with_only_the_query_masked_attends_to_every_memory_step():
    model = layerdsl.parse("input 8x6\ntap memory\nmasking\nattention 2 3 @memory\nglobalavgpool1d")
    attention = model.layers[1]
    assert not attention.input_masked  # no key is masked: the memory has no mask
    assert attention.output_masked  # the query's mask goes on to the pool
    testing.assert_backends_agree(model, padding="random", batch=4)
