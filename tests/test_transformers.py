"""The transformer examples against their references: keras-io's text classifier (built here in
Keras, as the example writes it) and torchvision's vit_b_16 (written out below from
torchvision/models/vision_transformer.py, since torchvision does not install beside the pinned CPU
torch). Counts as the frameworks count them, the backends agreeing, and the layerdsl model computing
the reference's function once the reference's weights are moved in."""

from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import testing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEXT = (EXAMPLES / "text_transformer.layers").read_text()
VIT = (EXAMPLES / "vit_b16.layers").read_text()


def padded_ids(batch: int, length: int, vocab: int, seed: int = 0) -> np.ndarray:
    """Token ids pre-padded with 0, as keras.utils.pad_sequences gives them (lengths vary)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, length)).astype("int32")
    for row, n in zip(ids, rng.integers(length // 4, length, size=batch), strict=True):
        row[: length - n] = 0
    return ids


# --- keras-io "Text classification with Transformer" ---------------------------------------------


def keras_io_text_classifier(maxlen=200, vocab_size=20000, embed_dim=32, num_heads=2, ff_dim=32):
    """The keras-io example's model, as the example writes it (Keras 3 version)."""
    keras = pytest.importorskip("keras")
    from keras import layers, ops

    class TransformerBlock(layers.Layer):
        def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
            super().__init__()
            self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
            self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
            self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
            self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
            self.dropout1 = layers.Dropout(rate)
            self.dropout2 = layers.Dropout(rate)

        def call(self, inputs):
            attn_output = self.dropout1(self.att(inputs, inputs))
            out1 = self.layernorm1(inputs + attn_output)
            ffn_output = self.dropout2(self.ffn(out1))
            return self.layernorm2(out1 + ffn_output)

    class TokenAndPositionEmbedding(layers.Layer):
        def __init__(self, maxlen, vocab_size, embed_dim):
            super().__init__()
            self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            positions = self.pos_emb(ops.arange(start=0, stop=ops.shape(x)[-1], step=1))
            return self.token_emb(x) + positions

    inputs = layers.Input(shape=(maxlen,))
    embedding = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)
    block = TransformerBlock(embed_dim, num_heads, ff_dim)
    x = block(embedding(inputs))
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs=inputs, outputs=outputs), embedding, block


def test_text_transformer_counts_657758_parameters_as_keras_io():
    model = layerdsl.parse(TEXT)
    assert model.total_params == 657_758
    assert model.trainable_params == 657_758
    reference, _, _ = keras_io_text_classifier()
    assert reference.count_params() == 657_758


def test_text_transformer_computes_the_keras_io_function():
    """keras-io's own weights, moved into the layerdsl model by role, give keras-io's outputs."""
    reference, embedding, block = keras_io_text_classifier()
    dense_20, dense_2 = reference.layers[-3], reference.layers[-1]
    model = layerdsl.parse(TEXT)
    by_kind = {}
    for layer in model.layers:
        by_kind.setdefault(layer.kind, []).append(layer)
    weights = {}

    def put(layer, values):
        for w, value in zip(layer.weights, values, strict=True):
            assert tuple(value.shape) == tuple(w.shape), (layer.name, w.name)
            weights[f"{layer.name}.{w.name}"] = np.asarray(value, dtype="float32")

    (token,) = by_kind["embedding"]
    put(token, [embedding.token_emb.embeddings.numpy()])
    put(by_kind["posembed"][0], [embedding.pos_emb.embeddings.numpy()])
    att = block.att
    put(by_kind["attention"][0], [v.numpy() for sub in (att.query_dense, att.key_dense, att.value_dense, att.output_dense)
                                  for v in (sub.kernel, sub.bias)])
    norm1, norm2 = by_kind["layernorm"]
    put(norm1, [block.layernorm1.gamma.numpy(), block.layernorm1.beta.numpy()])
    put(norm2, [block.layernorm2.gamma.numpy(), block.layernorm2.beta.numpy()])
    ff1, ff2, d20, d2 = by_kind["dense"]
    for layer, keras_layer in ((ff1, block.ffn.layers[0]), (ff2, block.ffn.layers[1]), (d20, dense_20), (d2, dense_2)):
        put(layer, [keras_layer.kernel.numpy(), keras_layer.bias.numpy()])
    assert set(weights) == set(model.weight_names())
    ids = padded_ids(4, 200, 20000)
    expected = reference(ids, training=False).numpy()
    for target in ("numpy", "torch", "keras"):
        pytest.importorskip({"numpy": "numpy", "torch": "torch", "keras": "keras"}[target])
        live = layerdsl.build(model, target=target)
        layerdsl.set_weights(live, weights)
        got = testing.run(target, live, model, ids)
        np.testing.assert_allclose(got, expected, atol=testing.ATOL, rtol=testing.RTOL, err_msg=target)


def test_text_transformer_backends_agree_on_pre_padded_ids():
    model = layerdsl.parse(TEXT)
    testing.assert_backends_agree(model, x=padded_ids(3, 200, 20000))


MASKED = TEXT.replace("embedding 20000 32 ", "embedding 20000 32 mask_zero=true ")


def test_text_transformer_with_mask_zero_agrees_after_the_masked_pool():
    assert MASKED != TEXT
    model = layerdsl.parse(MASKED)
    (attention,) = [layer for layer in model.layers if layer.kind == "attention"]
    assert attention.input_masked and attention.output_masked
    assert all(layer.input_masked for layer in model.layers if layer.kind in ("add", "layernorm", "globalavgpool1d"))
    testing.assert_backends_agree(model, x=padded_ids(3, 200, 20000, seed=5))


@pytest.mark.parametrize("target", testing.available_targets())
def test_with_mask_zero_the_padding_embedding_changes_nothing(target):
    """Masked steps get no attention weight and no share of the pool, in every backend: the
    embedding of token 0 cannot change the output. Without the mask it does."""
    ids = padded_ids(3, 200, 20000, seed=7)
    for text, masked in ((MASKED, True), (TEXT, False)):
        model = layerdsl.parse(text)
        weights = testing.random_weights(model)
        live = layerdsl.build(model, target=target)
        layerdsl.set_weights(live, weights)
        before = testing.run(target, live, model, ids)
        weights["embedding.embeddings"][0] += 3.0
        layerdsl.set_weights(live, weights)
        after = testing.run(target, live, model, ids)
        if masked:
            np.testing.assert_allclose(after, before, atol=testing.ATOL, rtol=testing.RTOL)
        else:
            assert np.abs(after - before).max() > 1e-3


# --- torchvision vit_b_16 ---------------------------------------------------------------------


def torchvision_vit(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072,
                    num_classes=1000):
    """torchvision's VisionTransformer (models/vision_transformer.py, torchvision 0.28), written out:
    conv_proj, class_token, encoder (pos_embedding, pre-norm EncoderBlocks, ln), heads.head."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class EncoderBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=0.0, batch_first=True)
            self.dropout = nn.Dropout(0.0)
            self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(0.0),
                                     nn.Linear(mlp_dim, hidden_dim), nn.Dropout(0.0))

        def forward(self, input):
            x = self.ln_1(input)
            x, _ = self.self_attention(x, x, x, need_weights=False)
            x = self.dropout(x) + input
            return x + self.mlp(self.ln_2(x))

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
            seq_length = (image_size // patch_size) ** 2 + 1
            self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
            self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
            self.layers = nn.Sequential(*[EncoderBlock() for _ in range(num_layers)])
            self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.head = nn.Linear(hidden_dim, num_classes)

        def forward(self, x):
            n = x.shape[0]
            x = self.conv_proj(x).reshape(n, hidden_dim, -1).permute(0, 2, 1)
            x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
            x = self.ln(self.layers(x + self.pos_embedding))
            return self.head(x[:, 0])

    return VisionTransformer()


def reduced(text: str) -> str:
    """The same ViT definition at 32x32 input, patch 8, width 64, 2 layers of 4 heads, 10 classes."""
    for old, new in (("224x224x3", "32x32x3"), ("conv2d 768 16 stride=16", "conv2d 64 8 stride=8"),
                     ("196x768", "16x64"), ("repeat 12 { encoder 12 3072 }", "repeat 2 { encoder 4 128 }"),
                     ("dense 1000", "dense 10")):
        assert old in text
        text = text.replace(old, new)
    return text


def test_vit_b16_counts_86567656_trainable_parameters_as_torchvision():
    model = layerdsl.parse(VIT)
    assert model.trainable_params == 86_567_656
    reference = torchvision_vit()
    assert sum(p.numel() for p in reference.parameters() if p.requires_grad) == 86_567_656


def test_reduced_vit_backends_agree():
    testing.assert_backends_agree(reduced(VIT))


def test_reduced_vit_computes_torchvisions_function():
    """torchvision's ViT at the reduced size, its own weights moved into the layerdsl model by role
    (conv_proj, class_token, pos_embedding, in_proj thirds, out_proj, mlp, ln, head): the same outputs."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torchvision_vit(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                                num_classes=10).eval()
    with torch.no_grad():  # torchvision zeros the class token and head: give every weight a value that shows
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model = layerdsl.parse(reduced(VIT))
    heads, width = 4, 64
    by_kind = {}
    for layer in model.layers:
        by_kind.setdefault(layer.kind, []).append(layer)
    weights = {}

    def put(layer, *values):
        for w, value in zip(layer.weights, values, strict=True):
            value = value.detach().numpy() if hasattr(value, "detach") else value
            assert tuple(value.shape) == tuple(w.shape), (layer.name, w.name, value.shape)
            weights[f"{layer.name}.{w.name}"] = np.ascontiguousarray(value, dtype="float32")

    def linear(layer, module):
        put(layer, module.weight.T, module.bias)

    put(by_kind["conv2d"][0], reference.conv_proj.weight.permute(2, 3, 1, 0), reference.conv_proj.bias)
    put(by_kind["classtoken"][0], reference.class_token[0, 0])
    put(by_kind["posembed"][0], reference.pos_embedding[0])
    norms, dense = by_kind["layernorm"], by_kind["dense"]
    for i, block in enumerate(reference.layers):
        attention = block.self_attention
        wq, wk, wv = attention.in_proj_weight.detach().chunk(3)
        bq, bk, bv = attention.in_proj_bias.detach().chunk(3)
        projections = []
        for w, b in ((wq, bq), (wk, bk), (wv, bv)):
            projections += [w.T.reshape(width, heads, width // heads), b.reshape(heads, width // heads)]
        wo = attention.out_proj.weight.detach()
        put(by_kind["attention"][i], *projections, wo.T.reshape(heads, width // heads, width), attention.out_proj.bias)
        for norm, module in ((norms[2 * i], block.ln_1), (norms[2 * i + 1], block.ln_2)):
            put(norm, module.weight, module.bias)
        linear(dense[2 * i], block.mlp[0])
        linear(dense[2 * i + 1], block.mlp[3])
    put(norms[-1], reference.ln.weight, reference.ln.bias)
    linear(dense[-1], reference.head)
    assert set(weights) == set(model.weight_names())
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    for target in testing.available_targets():
        live = layerdsl.build(model, target=target)
        layerdsl.set_weights(live, weights)
        np.testing.assert_allclose(testing.run(target, live, model, x), expected, atol=testing.ATOL,
                                   rtol=testing.RTOL, err_msg=target)


# --- masks through merges ----------------------------------------------------------------------

MASKED_MERGES = {
    # A residual around a masked sequence: both inputs carry the one mask.
    "residual": "input 6 dtype=int32\nembedding 10 4 mask_zero=true\nresidual { dense 4 | relu }\nglobalavgpool1d\n",
    # Two masks made by one layer are one mask (Keras ORs them).
    "multiply_same_mask": "input 6 dtype=int32\nembedding 10 4 mask_zero=true\nmultiply { dense 4 } { dense 4 }\n"
    "globalavgpool1d\n",
}


@pytest.mark.parametrize("text", MASKED_MERGES.values(), ids=MASKED_MERGES)
def test_a_merge_carries_the_mask_its_inputs_share(text):
    model = layerdsl.parse(text)
    merge = next(layer for layer in model.layers if layer.kind in ("add", "concat", "multiply"))
    assert merge.input_masked and merge.output_masked
    result = testing.assert_backends_agree(model, padding="random", batch=4)
    unmasked = testing.compare(text.replace(" mask_zero=true", ""), ["numpy"], padding="random", batch=4)
    assert np.abs(unmasked.outputs["numpy"] - result.outputs["numpy"]).max() > 1e-4  # the mask mattered


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input 6 dtype=int32\ntap ids\nembedding 10 4 mask_zero=true\ntap a\n@ids\nembedding 10 4 mask_zero=true\n"
         "add @a\n", "merges tensors masked by different layers"),
        ("input 6 dtype=int32\ntap ids\nembedding 10 4 mask_zero=true\ntap a\n@ids\nembedding 10 4\nconcat @a\n",
         "Keras's Concatenate would count every step as present"),
        ("input 6 dtype=int32\ntap ids\nembedding 10 4 mask_zero=true\ntap a\n@ids\nembedding 10 4\nadd @a\n",
         "Keras's merge layers drop the mask when one of their inputs has none"),
        ("input 6 dtype=int32\nembedding 10 4 mask_zero=true\nconcat { dense 3 } { dense 2 }\n",
         "not a concatenation"),
    ],
)
def test_merges_of_masks_layerdsl_cannot_carry_are_refused(text, message):
    with pytest.raises(layerdsl.LayerCheckError) as info:
        layerdsl.parse(text, "m.layers")
    assert message in info.value.message
    assert info.value.line is not None


# --- generated code -----------------------------------------------------------------------------


def test_encoder_blocks_read_their_width_as_the_definition_does():
    """`dense in_channels` is the block's input width in the generated code, not the number it has
    in this model: a torch constructor argument, a Keras `in_channels = inputs.shape[-1]`."""
    model = layerdsl.parse(VIT)
    torch_source = layerdsl.compile(model, "torch")
    assert "self.dense_1 = nn.Linear(mlp, in_channels)" in torch_source
    assert "nn.MultiheadAttention(in_channels, heads, batch_first=True)" in torch_source
    keras_source = layerdsl.compile(model, "keras")
    encoder = keras_source[keras_source.index("def encoder(") : keras_source.index("def build_model(")]
    assert encoder.splitlines()[1].strip() == "in_channels = inputs.shape[-1]"
    assert 'layers.Dense(in_channels, name=name + "_dense_1")' in encoder
    assert "768" not in encoder


# --- cross-attention between sequences masked differently (an encoder-decoder) ------------------

TRANSLATION = """
input 7 dtype=int32 name=source
embedding 30 8{source_mask}
posembed
attention 2 4
tap memory
input 5 dtype=int32 name=target
embedding 30 8{target_mask}
attention 2 4 causal=true
attention 2 4 @memory
{readout}
"""


@pytest.mark.parametrize(
    ("source_mask", "target_mask"), [(True, True), (True, False), (False, True)], ids=["both", "source", "target"]
)
def test_cross_attention_masks_keys_by_the_memorys_mask_and_keeps_the_querys(source_mask, target_mask):
    """Keras masks the keys by the memory's mask and passes the query's mask on, whichever of the two
    exist: every backend agrees, on a readout that honours the query's mask where there is one."""
    text = TRANSLATION.format(
        source_mask=" mask_zero=true" if source_mask else "",
        target_mask=" mask_zero=true" if target_mask else "",
        readout="globalavgpool1d" if target_mask else "dense 3",
    )
    model = layerdsl.parse(text)
    cross = [layer for layer in model.layers if layer.kind == "attention"][-1]
    assert cross.input_masked is source_mask
    assert cross.output_masked is target_mask
    result = testing.assert_backends_agree(model, padding="random", batch=4)
    if source_mask:  # the mask mattered: without it the padded source steps take part
        plain = testing.compare(text.replace(" mask_zero=true", "", 1), ["numpy"], padding="random", batch=4)
        assert np.abs(plain.outputs["numpy"] - result.outputs["numpy"]).max() > 1e-4
