"""NumPy runtime pieces for graphs and the layers of real architectures (merges, depthwise and
transposed convolutions, upsampling, layer normalization, reshapes).

Same rules as ``numpy_runtime``: each top-level function and class is self-contained apart from
``np`` and the runtime's pieces (here and in ``numpy_runtime``), because the numpy backend copies
the source of exactly the pieces a model uses into its generated file.
"""

import numpy as np

from .numpy_runtime import Conv1D, Conv2D, Layer, linear, pad, softmax, windows


def aligned(inputs):
    """Inputs of lower rank get size-1 axes after the batch axis, as Keras's merge layers broadcast."""
    rank = max(x.ndim for x in inputs)
    return [x.reshape(len(x), *(1,) * (rank - x.ndim), *x.shape[1:]) for x in inputs]


class Add(Layer):
    def __call__(self, *inputs):
        inputs = aligned(inputs)
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x  # in input order, as Keras sums
        return total


class Multiply(Layer):
    def __call__(self, *inputs):
        inputs = aligned(inputs)
        product = inputs[0]
        for x in inputs[1:]:
            product = product * x
        return product


class Average(Add):
    def __call__(self, *inputs):
        return super().__call__(*inputs) / np.float32(len(inputs))


class Subtract(Layer):
    def __call__(self, first, second):
        first, second = aligned((first, second))
        return first - second


class Maximum(Layer):
    def __call__(self, *inputs):
        inputs = aligned(inputs)
        out = inputs[0]
        for x in inputs[1:]:
            out = np.maximum(out, x)
        return out


class Minimum(Layer):
    def __call__(self, *inputs):
        inputs = aligned(inputs)
        out = inputs[0]
        for x in inputs[1:]:
            out = np.minimum(out, x)
        return out


class Concatenate(Layer):
    def __init__(self, axis=-1, name=None):
        self.axis = axis  # counted with the batch axis
        super().__init__(name=name)

    def __call__(self, *inputs):
        return np.concatenate(inputs, axis=self.axis)


class GroupedConv2D(Conv2D):
    """A convolution whose channels split into groups (Keras's and torch's `groups`), read off the
    kernel's (..., in / groups, filters) shape: one GEMM per group."""

    def __call__(self, x):
        patches = windows(pad(x, self.padding), self.kernel.shape[:-2], self.strides, self.dilation)
        width, filters = self.kernel.shape[-2:]
        groups = x.shape[-1] // width
        per = filters // groups
        y = np.empty((*patches.shape[: x.ndim - 1], filters), dtype=np.float32)
        for g in range(groups):
            columns = patches[..., g * width : (g + 1) * width].reshape(-1, self.matrix.shape[0])
            kernel = self.kernel[..., g * per : (g + 1) * per].reshape(-1, per)
            y[..., g * per : (g + 1) * per] = (columns @ kernel).reshape(*y.shape[:-1], per)
        if np.ndim(self.bias):
            y += self.bias
        return self.activation(y)


class GroupedConv1D(GroupedConv2D, Conv1D):
    pass


class ZeroPad2D(Layer):
    def __init__(self, padding, name=None):
        self.padding = padding
        super().__init__(name=name)

    def __call__(self, x):
        return pad(x, self.padding)


def depthwise(x, kernel, strides, dilation, padding):
    """Each channel correlated with its own (KH, KW, C, M) kernel; output channel c*M + m, as Keras."""
    kh, kw, _, multiplier = kernel.shape
    if multiplier > 1:
        x = x.repeat(multiplier, axis=-1)  # output channel c*M + m reads input channel c
    taps = kernel.reshape(kh, kw, -1)
    patches = windows(pad(x, padding), (kh, kw), strides, dilation)
    out = np.zeros((*patches.shape[:3], taps.shape[-1]), dtype=np.float32)
    # One multiply-add per kernel tap, over bands of output rows small enough to stay in cache.
    band = max(1, 2**17 // out[:, 0].size)
    scratch = np.empty_like(out[:, :band])
    for top in range(0, out.shape[1], band):
        rows = out[:, top : top + band]
        for i in range(kh):
            for j in range(kw):
                rows += np.multiply(patches[:, top : top + band, :, i, j], taps[i, j], out=scratch[:, : rows.shape[1]])
    return out


class DepthwiseConv2D(Layer):
    bias = 0.0

    def __init__(
        self, kernel, bias=None, strides=(1, 1), dilation=(1, 1), padding=((0, 0), (0, 0)), activation=linear, name=None
    ):
        self.strides, self.dilation, self.padding, self.activation = strides, dilation, padding, activation
        super().__init__(kernel=kernel, bias=bias, name=name)

    def __call__(self, x):
        return self.activation(depthwise(x, self.kernel, self.strides, self.dilation, self.padding) + self.bias)


class SeparableConv2D(Layer):
    bias = 0.0

    def __init__(
        self,
        depthwise_kernel,
        pointwise_kernel,
        bias=None,
        strides=(1, 1),
        dilation=(1, 1),
        padding=((0, 0), (0, 0)),
        activation=linear,
        name=None,
    ):
        self.strides, self.dilation, self.padding, self.activation = strides, dilation, padding, activation
        kernels = {"depthwise_kernel": depthwise_kernel, "pointwise_kernel": pointwise_kernel}
        super().__init__(**kernels, bias=bias, name=name)

    def __call__(self, x):
        y = depthwise(x, self.depthwise_kernel, self.strides, self.dilation, self.padding)
        pointwise = self.pointwise_kernel.reshape(self.pointwise_kernel.shape[2:])
        return self.activation(y @ pointwise + self.bias)


class Conv2DTranspose(Layer):
    """Keras's transposed convolution (TensorFlow's gradient of conv2d): one GEMM spreads each input
    pixel over a (KH, KW, F) patch, the patches overlap-add ``strides`` apart, and ``same`` crops
    the result to ``in * stride`` as TensorFlow does (the extra row or column comes off the end)."""

    bias = 0.0

    def __init__(self, kernel, bias=None, strides=(1, 1), padding="valid", activation=linear, name=None):
        self.strides, self.padding, self.activation = strides, padding, activation
        super().__init__(kernel=kernel, bias=bias, name=name)

    def refresh(self):
        super().refresh()
        kh, kw, filters, channels = self.kernel.shape
        self.matrix = self.kernel.transpose(3, 0, 1, 2).reshape(channels, kh * kw * filters)

    def __call__(self, x):
        n, h, w, _ = x.shape
        (kh, kw, filters, _), (sh, sw) = self.kernel.shape, self.strides
        patches = (x.reshape(-1, x.shape[-1]) @ self.matrix).reshape(n, h, w, kh, kw, filters)
        # The `valid` output: every patch, and zeros beyond them when the kernel is smaller than the stride.
        out = np.zeros((n, h * sh + max(kh - sh, 0), w * sw + max(kw - sw, 0), filters), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                out[:, i : i + (h - 1) * sh + 1 : sh, j : j + (w - 1) * sw + 1 : sw] += patches[:, :, :, i, j]
        if self.padding == "same":
            top, left = max(kh - sh, 0) // 2, max(kw - sw, 0) // 2
            out = out[:, top : top + h * sh, left : left + w * sw]
        return self.activation(out + self.bias)


def bilinear_axis(x, axis, factor):
    """Upsamples one axis by ``factor`` as TensorFlow's bilinear resize with half-pixel centers."""
    size = x.shape[axis]
    source = (np.arange(size * factor) + 0.5) / factor - 0.5
    below = np.floor(source)
    shape = [1] * x.ndim
    shape[axis] = -1
    weight = (source - below).astype(np.float32).reshape(shape)
    lower = np.take(x, np.clip(below, 0, size - 1).astype(int), axis=axis)
    upper = np.take(x, np.clip(below + 1, 0, size - 1).astype(int), axis=axis)
    return lower + (upper - lower) * weight


class UpSample2D(Layer):
    def __init__(self, size=(2, 2), interpolation="nearest", name=None):
        self.size, self.interpolation = size, interpolation
        super().__init__(name=name)

    def __call__(self, x):
        if self.interpolation == "bilinear":
            return bilinear_axis(bilinear_axis(x, 1, self.size[0]), 2, self.size[1])
        return x.repeat(self.size[0], axis=1).repeat(self.size[1], axis=2)


class LayerNorm(Layer):
    gamma, beta = 1.0, 0.0

    def __init__(self, gamma=None, beta=None, eps=1e-3, name=None):
        self.eps = eps
        super().__init__(gamma=gamma, beta=beta, name=name)

    def __call__(self, x):
        y = x - x.mean(axis=-1, keepdims=True)
        variance = np.einsum("...i,...i->...", y, y)[..., None]  # sum of squares, no squared copy
        variance /= np.float32(x.shape[-1])
        variance += np.float32(self.eps)
        y /= np.sqrt(variance)  # in place from here on: one array, however long the sequence
        y *= self.gamma
        y += self.beta
        return y


class Reshape(Layer):
    def __init__(self, target, name=None):
        self.target = target
        super().__init__(name=name)

    def __call__(self, x):
        return x.reshape(len(x), *self.target)


class Permute(Layer):
    def __init__(self, dims, name=None):
        self.axes = (0, *dims)  # Keras numbers the axes from 1, after the batch axis
        super().__init__(name=name)

    def __call__(self, x):
        return x.transpose(self.axes)


class Rescaling(Layer):
    def __init__(self, scale, offset=0.0, name=None):
        self.scale, self.offset = np.float32(scale), np.float32(offset)
        super().__init__(name=name)

    def __call__(self, x):
        return x * self.scale + self.offset


class Normalization(Layer):
    """Keras's Normalization: (x - mean) / max(sqrt(variance), 1e-7), per channel or with constants."""

    def __init__(self, mean, variance, count=None, name=None):
        super().__init__(mean=mean, variance=variance, count=count, name=name)

    def refresh(self):
        super().refresh()
        self.std = np.maximum(np.sqrt(self.variance), np.float32(1e-7))

    def __call__(self, x):
        return (x - self.mean) / self.std


class LayerScale(Layer):
    def __init__(self, gamma, name=None):
        super().__init__(gamma=gamma, name=name)

    def __call__(self, x):
        return x * self.gamma


class Cropping(Layer):
    def __init__(self, cropping, name=None):
        self.cropping = cropping  # (start, end) per spatial axis
        super().__init__(name=name)

    def __call__(self, x):
        return x[(slice(None), *(slice(a, x.shape[i + 1] - b) for i, (a, b) in enumerate(self.cropping)))]


class UpSample1D(Layer):
    def __init__(self, size=2, name=None):
        self.size = size
        super().__init__(name=name)

    def __call__(self, x):
        return x.repeat(self.size, axis=1)


class PositionEmbedding(Layer):
    def __init__(self, embeddings, name=None):
        super().__init__(embeddings=embeddings, name=name)

    def __call__(self, x):
        return x + self.embeddings


class ClassToken(Layer):
    def __init__(self, token, name=None):
        super().__init__(token=token, name=name)

    def __call__(self, x):
        return np.concatenate([np.broadcast_to(self.token, (len(x), 1, x.shape[-1])), x], axis=1)


class Select(Layer):
    def __init__(self, index, name=None):
        self.index = index
        super().__init__(name=name)

    def __call__(self, x):
        return x[:, self.index]


class Attention(Layer):
    """Keras's MultiHeadAttention at inference: one GEMM per projection, heads an axis of (N, H, T, D).
    Keys at masked or (``causal``) later steps get no weight; ``mask`` is the keys' and values' mask."""

    query_bias = key_bias = value_bias = output_bias = 0.0

    def __init__(
        self,
        query_kernel,
        key_kernel,
        value_kernel,
        output_kernel,
        query_bias=None,
        key_bias=None,
        value_bias=None,
        output_bias=None,
        causal=False,
        name=None,
    ):
        self.causal = causal
        weights = dict(query_kernel=query_kernel, query_bias=query_bias, key_kernel=key_kernel, key_bias=key_bias)
        weights.update(value_kernel=value_kernel, value_bias=value_bias, output_kernel=output_kernel)
        super().__init__(**weights, output_bias=output_bias, name=name)

    def refresh(self):
        super().refresh()
        self.heads, key_dim = self.query_kernel.shape[1:]
        scale = np.float32(1.0 / np.sqrt(key_dim))  # folded into the query projection, as Keras scales the query
        self.query = self.matrix(self.query_kernel, self.query_bias, scale)
        self.key = self.matrix(self.key_kernel, self.key_bias)
        self.value = self.matrix(self.value_kernel, self.value_bias)
        self.output = (self.output_kernel.reshape(-1, self.output_kernel.shape[-1]), np.ravel(self.output_bias))

    @staticmethod
    def matrix(kernel, bias, factor=1.0):
        """An (F, H, D) kernel and (H, D) bias as the (F, H * D) matrix and vector of one GEMM."""
        return kernel.reshape(len(kernel), -1) * factor, np.ravel(bias) * factor

    @staticmethod
    def project(x, projection):
        kernel, bias = projection
        y = x.reshape(-1, x.shape[-1]) @ kernel  # (N * T, out): one GEMM
        y += bias
        return y.reshape(*x.shape[:-1], -1)

    def split_heads(self, x, projection):
        """(N, T, F) -> (N, H, T, D)."""
        y = self.project(x, projection)
        return y.reshape(*y.shape[:-1], self.heads, -1).transpose(0, 2, 1, 3)

    def __call__(self, x, memory=None, mask=None):
        memory = x if memory is None else memory
        query, key = self.split_heads(x, self.query), self.split_heads(memory, self.key)
        scores = query @ key.transpose(0, 1, 3, 2)  # (N, H, T, S)
        keep = np.tri(x.shape[1], memory.shape[1], dtype=bool) if self.causal else None
        if mask is not None:
            keep = mask[:, None, None, :] if keep is None else keep & mask[:, None, None, :]
        if keep is not None:
            scores = np.where(keep, scores, np.float32(-1e9))  # as Keras's masked softmax
        heads = softmax(scores) @ self.split_heads(memory, self.value)  # (N, H, T, Dv)
        return self.project(heads.transpose(0, 2, 1, 3).reshape(*x.shape[:-1], -1), self.output)
