"""Inference kernels and layers in plain NumPy (float32, channels-last), for layerdsl's numpy target.

Every top-level function and class here is self-contained apart from ``np`` and
the other pieces of this module, because the numpy backend copies the source of
exactly the pieces a model uses into its generated file. Keep them that way:
no module state, no other imports, definitions before their users.
"""

import numpy as np


def draw(rng, kind, shape, limit=0.0, std=0.0, value=0.0, gain=1.0):
    """A float32 array of ``shape`` drawn as a Keras initializer would (see layerdsl.initializers)."""
    if kind == "constant":
        return np.full(shape, value, dtype=np.float32)
    if kind == "uniform":
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    if kind == "normal":
        return (std * rng.standard_normal(shape)).astype(np.float32)
    if kind == "truncated_normal":
        values = rng.standard_normal(shape)
        while (outside := np.abs(values) > 2.0).any():
            values[outside] = rng.standard_normal(np.count_nonzero(outside))
        return (std * values).astype(np.float32)
    if kind == "orthogonal":
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
        q *= np.sign(np.diag(r))
        return (gain * (q if rows >= cols else q.T)).reshape(shape).astype(np.float32)
    raise ValueError(f"unknown distribution {kind!r}")


def linear(x):
    return x


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    small = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + small), small / (1.0 + small))


def tanh(x):
    return np.tanh(x)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def selu(x):
    return 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0)))


def erfc(x):
    """Complementary error function, relative error under 1.2e-7 (Numerical Recipes' erfcc)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    coefficients = [0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807]
    coefficients += [-0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223]
    tail = t * np.exp(-z * z + np.polyval(coefficients, t))
    return np.where(x >= 0, tail, 2.0 - tail)


def gelu(x):
    # Exact (erf) form, as Keras's default approximate=False; float64 inside so only the final rounding shows.
    return (0.5 * x * erfc(x.astype(np.float64) * -0.7071067811865476)).astype(x.dtype)


def softplus(x):
    return np.logaddexp(0.0, x)


def softsign(x):
    return x / (1.0 + np.abs(x))


def leaky_relu(x):
    return np.where(x >= 0, x, 0.2 * x)


def silu(x):
    return x * sigmoid(x)


def pad(x, padding, value=0.0):
    """Pads the height and width of an NHWC batch by ((top, bottom), (left, right))."""
    if not any(map(any, padding)):
        return x
    return np.pad(x, ((0, 0), *padding, (0, 0)), constant_values=value)


def windows(x, size, strides, dilation=(1, 1)):
    """Every (dilated, strided) window of an NHWC batch as a view (N, OH, OW, KH, KW, C); copies nothing."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = size, strides, dilation
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    bn, bh, bw, bc = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (bn, bh * sh, bw * sw, bh * dh, bw * dw, bc), writeable=False
    )


class Layer:
    """Base of every layer. ``weights`` maps canonical names to float32 arrays in Keras layout;
    each is also an attribute. Assigning ``weights`` (all or some) replaces those arrays and
    refreshes whatever the layer derives from them."""

    def __init__(self, **weights):
        self._weights = {name: np.array(w, dtype=np.float32) for name, w in weights.items() if w is not None}
        self.refresh()

    @property
    def weights(self):
        return dict(self._weights)

    @weights.setter
    def weights(self, arrays):
        for name, array in arrays.items():
            array = np.array(array, dtype=np.float32)
            if array.shape != self._weights[name].shape:
                raise ValueError(f"weight {name!r} needs shape {self._weights[name].shape}, not {array.shape}")
            self._weights[name] = array
        self.refresh()

    def refresh(self):
        self.__dict__.update(self._weights)


class Dense(Layer):
    bias = 0.0

    def __init__(self, kernel, bias=None, activation=linear):
        self.activation = activation
        super().__init__(kernel=kernel, bias=bias)

    def __call__(self, x):
        return self.activation(x @ self.kernel + self.bias)


class Conv2D(Layer):
    bias = 0.0

    def __init__(self, kernel, bias=None, strides=(1, 1), dilation=(1, 1), padding=((0, 0), (0, 0)), activation=linear):
        self.strides, self.dilation, self.padding, self.activation = strides, dilation, padding, activation
        super().__init__(kernel=kernel, bias=bias)

    def refresh(self):
        super().refresh()
        self.matrix = self.kernel.reshape(-1, self.kernel.shape[-1])  # rows in (kh, kw, in) order, as windows()

    def __call__(self, x):
        patches = windows(pad(x, self.padding), self.kernel.shape[:2], self.strides, self.dilation)
        y = patches.reshape(-1, len(self.matrix)) @ self.matrix  # im2col: one GEMM for the whole batch
        return self.activation(y.reshape(*patches.shape[:3], self.matrix.shape[1]) + self.bias)


class MaxPool2D(Layer):
    def __init__(self, pool, strides, padding=((0, 0), (0, 0))):
        self.pool, self.strides, self.padding = pool, strides, padding
        super().__init__()

    def __call__(self, x):
        return windows(pad(x, self.padding, -np.inf), self.pool, self.strides).max(axis=(3, 4))


class AvgPool2D(Layer):
    def __init__(self, pool, strides, padding=((0, 0), (0, 0))):
        self.pool, self.strides, self.padding = pool, strides, padding
        super().__init__()

    def __call__(self, x):
        sums = windows(pad(x, self.padding), self.pool, self.strides).sum(axis=(3, 4))
        # As TensorFlow: padded positions count in no average.
        ones = pad(np.ones((1, *x.shape[1:3], 1), dtype=x.dtype), self.padding)
        return sums / windows(ones, self.pool, self.strides).sum(axis=(3, 4))


class BatchNorm(Layer):
    gamma, beta = 1.0, 0.0

    def __init__(self, moving_mean, moving_variance, gamma=None, beta=None, eps=1e-3):
        self.eps = eps
        super().__init__(gamma=gamma, beta=beta, moving_mean=moving_mean, moving_variance=moving_variance)

    def refresh(self):
        super().refresh()
        scale = self.gamma / np.sqrt(self.moving_variance.astype(np.float64) + self.eps)
        self.scale = scale.astype(np.float32)
        self.shift = (self.beta - self.moving_mean * scale).astype(np.float32)

    def __call__(self, x):
        return x * self.scale + self.shift


class Flatten(Layer):
    def __call__(self, x):
        return x.reshape(len(x), np.prod(x.shape[1:], dtype=int))


class Dropout(Layer):
    def __call__(self, x):
        return x  # dropout acts only while training


class Activation(Layer):
    def __init__(self, function):
        self.function = function
        super().__init__()

    def __call__(self, x):
        return self.function(x)
