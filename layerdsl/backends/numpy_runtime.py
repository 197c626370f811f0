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


def initial(rng, initializer, shape):
    """A weight of ``shape`` (Keras layout) drawn as Keras's ``initializer`` draws it: the
    distributions of layerdsl.initializers.distribution, computed here from the shape."""
    if initializer in ("zeros", "ones"):
        return draw(rng, "constant", shape, value=float(initializer == "ones"))
    if initializer.startswith("constant:"):  # a fixed starting value: layer scale's 1e-6
        return draw(rng, "constant", shape, value=float(initializer.split(":", 1)[1]))
    if initializer == "normal":
        return draw(rng, "normal", shape, std=0.05)
    if initializer == "uniform":
        return draw(rng, "uniform", shape, limit=0.05)
    if initializer == "orthogonal":
        return draw(rng, "orthogonal", shape)
    family, kind = initializer.split("_")  # glorot_uniform, he_normal, lecun_uniform, ...
    receptive = int(np.prod(shape[:-2]))
    fan_in, fan_out = (shape[-2] * receptive, shape[-1] * receptive) if len(shape) >= 2 else (shape or (1,)) * 2
    scale, fan = {"glorot": (1.0, (fan_in + fan_out) / 2.0), "he": (2.0, fan_in), "lecun": (1.0, fan_in)}[family]
    variance = scale / max(1.0, fan)
    if kind == "uniform":
        return draw(rng, "uniform", shape, limit=float(np.sqrt(3.0 * variance)))
    return draw(rng, "truncated_normal", shape, std=float(np.sqrt(variance)) / 0.87962566103423978)


def linear(x):
    return x


def relu(x):
    return np.maximum(x, 0.0)


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def sigmoid(x):
    # 0.5 * tanh(x / 2) + 0.5: never overflows, and three passes over one array where exp and where take six.
    y = np.multiply(x, 0.5)
    np.tanh(y, out=y)
    y *= 0.5
    y += 0.5
    return y


def tanh(x):
    return np.tanh(x)


def softmax(x):
    e = np.subtract(x, x.max(axis=-1, keepdims=True))
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def selu(x):
    return 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0)))


def gelu(x):
    # Exact (erf) form, as Keras's default approximate=False, in float32 and without a branch:
    # gelu(x) = relu(x) - |x| / 2 * erfc(|x| / sqrt(2)), with erfc from Abramowitz & Stegun 7.1.26
    # (absolute error under 1.5e-7). Three arrays, each step in place: fresh temporaries cost more
    # than the arithmetic (each is new memory for the allocator to map).
    a = np.abs(x)
    t = a * np.float32(0.3275911 * 0.7071067811865476)
    t += 1
    np.reciprocal(t, out=t)
    tail = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        tail += np.float32(c)
        tail *= t
    np.square(a, out=t)
    t *= np.float32(-0.5)
    np.exp(t, out=t)
    tail *= t  # erfc(|x| / sqrt(2))
    tail *= a
    tail *= np.float32(-0.5)
    np.maximum(x, 0, out=a)
    tail += a
    return tail


def gelu_approximate(x):
    # Keras's approximate=True: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))).
    y = x * x
    y *= np.float32(0.044715)
    y += 1
    y *= x
    y *= np.float32(0.7978845608028654)
    np.tanh(y, out=y)
    y += 1
    y *= x
    y *= np.float32(0.5)
    return y


def softplus(x):
    return np.logaddexp(0.0, x)


def softsign(x):
    return x / (1.0 + np.abs(x))


def leaky_relu(x):
    return np.where(x >= 0, x, 0.2 * x)


def silu(x):
    return x * sigmoid(x)


def hard_sigmoid(x):
    return np.clip(x + np.float32(3.0), 0.0, 6.0) / np.float32(6.0)  # Keras 3: relu6(x + 3) / 6


def hard_swish(x):
    return x * hard_sigmoid(x)


def mish(x):
    return x * np.tanh(softplus(x))


def hard_tanh(x):
    return np.clip(x, -1.0, 1.0)


def log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_sigmoid(x):
    return -softplus(-x)


def celu(x):
    return np.maximum(x, 0.0) + np.expm1(np.minimum(x, 0.0))  # alpha 1


def tanh_shrink(x):
    return x - np.tanh(x)


def soft_shrink(x):
    return np.where(x > 0.5, x - np.float32(0.5), np.where(x < -0.5, x + np.float32(0.5), np.float32(0.0)))


def hard_shrink(x):
    return np.where(np.abs(x) > 0.5, x, np.float32(0.0))


def pad(x, padding, value=0.0):
    """Pads the spatial axes of a channels-last batch: ((before, after),) per axis, time or height and width."""
    if not any(map(any, padding)):
        return x
    n, *spatial, c = x.shape
    padded = np.full((n, *(s + sum(p) for s, p in zip(spatial, padding, strict=True)), c), value, x.dtype)
    padded[(slice(None), *(slice(p[0], p[0] + s) for s, p in zip(spatial, padding, strict=True)))] = x
    return padded


def windows(x, size, strides, dilation=None):
    """Every (dilated, strided) window of a channels-last batch as a view: (N, OT, K, C) for
    sequences, (N, OH, OW, KH, KW, C) for images; copies nothing."""
    dilation = dilation or (1,) * len(size)
    n, *spatial, c = x.shape
    out = [(s - (k - 1) * d - 1) // st + 1 for s, k, st, d in zip(spatial, size, strides, dilation, strict=True)]
    bn, *step, bc = x.strides
    return np.lib.stride_tricks.as_strided(
        x,
        (n, *out, *size, c),
        (
            bn,
            *(b * s for b, s in zip(step, strides, strict=True)),
            *(b * d for b, d in zip(step, dilation, strict=True)),
            bc,
        ),
        writeable=False,
    )


class Layer:
    """Base of every layer. ``weights`` maps canonical names to float32 arrays in Keras layout;
    each is also an attribute. Assigning ``weights`` (all or some) replaces those arrays and
    refreshes whatever the layer derives from them."""

    def __init__(self, name=None, **weights):
        self.name = name
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


class Block:
    """Layers and blocks called as one (a block of the model's source). ``named_layers`` finds
    every layer inside, by its name."""

    def named_layers(self):
        found = {}
        for part in self.__dict__.values():
            for item in part if isinstance(part, list) else [part]:
                if isinstance(item, Layer):
                    found[item.name] = item
                elif isinstance(item, Block):
                    found.update(item.named_layers())
        return found


class Dense(Layer):
    bias = 0.0

    def __init__(self, kernel, bias=None, activation=linear, name=None):
        self.activation = activation
        super().__init__(kernel=kernel, bias=bias, name=name)

    def __call__(self, x):
        y = x @ self.kernel
        if np.ndim(self.bias):
            y += self.bias  # in place: no temporary
        return self.activation(y)


class Conv2D(Layer):
    bias = 0.0

    def __init__(
        self, kernel, bias=None, strides=(1, 1), dilation=(1, 1), padding=((0, 0), (0, 0)), activation=linear, name=None
    ):
        self.strides, self.dilation, self.padding, self.activation = strides, dilation, padding, activation
        super().__init__(kernel=kernel, bias=bias, name=name)

    def refresh(self):
        super().refresh()
        self.matrix = self.kernel.reshape(-1, self.kernel.shape[-1])  # rows in (kh, kw, in) order, as windows()

    def __call__(self, x):
        patches = windows(pad(x, self.padding), self.kernel.shape[:-2], self.strides, self.dilation)
        y = patches.reshape(-1, len(self.matrix)) @ self.matrix  # im2col (the one copy): one GEMM for the batch
        if np.ndim(self.bias):
            y += self.bias
        return self.activation(y.reshape(*patches.shape[: x.ndim - 1], self.matrix.shape[1]))


class Conv1D(Conv2D):
    def __init__(self, kernel, bias=None, stride=1, dilation=1, padding=(0, 0), activation=linear, name=None):
        super().__init__(kernel, bias, (stride,), (dilation,), (padding,), activation, name=name)


class MaxPool2D(Layer):
    def __init__(self, pool, strides, padding=((0, 0), (0, 0)), name=None):
        self.pool, self.strides, self.padding = pool, strides, padding
        super().__init__(name=name)

    def __call__(self, x):
        patches = windows(pad(x, self.padding, -np.inf), self.pool, self.strides)
        # One strided view per window offset, folded with maximum: several times faster than max() over the window.
        views = [patches[(..., *offset, slice(None))] for offset in np.ndindex(*self.pool)]
        out = views[0].copy()
        for view in views[1:]:
            np.maximum(out, view, out=out)
        return out


class AvgPool2D(Layer):
    def __init__(self, pool, strides, padding=((0, 0), (0, 0)), name=None):
        self.pool, self.strides, self.padding = pool, strides, padding
        super().__init__(name=name)

    def __call__(self, x):
        patches = windows(pad(x, self.padding), self.pool, self.strides)
        views = [patches[(..., *offset, slice(None))] for offset in np.ndindex(*self.pool)]
        sums = views[0].copy()
        for view in views[1:]:
            sums += view
        # As TensorFlow: padded positions count in no average.
        ones = pad(np.ones((1, *x.shape[1:-1], 1), dtype=x.dtype), self.padding)
        sums /= windows(ones, self.pool, self.strides).sum(axis=tuple(range(x.ndim - 1, 2 * x.ndim - 3)))
        return sums


class MaxPool1D(MaxPool2D):
    def __init__(self, pool, stride, padding=(0, 0), name=None):
        super().__init__((pool,), (stride,), (padding,), name=name)


class AvgPool1D(AvgPool2D):
    def __init__(self, pool, stride, padding=(0, 0), name=None):
        super().__init__((pool,), (stride,), (padding,), name=name)


class BatchNorm(Layer):
    """Keras's BatchNormalization at inference. The weights start as Keras's do (gamma and the
    moving variance ones, beta and the moving mean zeros); a weight passed replaces its start,
    and ``gamma=None`` or ``beta=None`` leaves it out (``scale=False``, ``center=False``)."""

    gamma, beta = 1.0, 0.0

    def __init__(self, channels, eps=1e-3, name=None, **weights):
        ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        start = {"gamma": ones, "beta": zeros, "moving_mean": zeros, "moving_variance": ones}
        self.eps = eps
        super().__init__(name=name, **{**start, **weights})

    def refresh(self):
        super().refresh()
        scale = self.gamma / np.sqrt(self.moving_variance.astype(np.float64) + self.eps)
        self.scale = scale.astype(np.float32)
        self.shift = (self.beta - self.moving_mean * scale).astype(np.float32)

    def __call__(self, x):
        y = x * self.scale
        y += self.shift
        return y


class Flatten(Layer):
    def __call__(self, x):
        return x.reshape(len(x), np.prod(x.shape[1:], dtype=int))


class Dropout(Layer):
    def __call__(self, x):
        return x  # dropout acts only while training


class Activation(Layer):
    def __init__(self, function, name=None):
        self.function = function
        super().__init__(name=name)

    def __call__(self, x):
        return self.function(x)


class GlobalMaxPool(Layer):
    def __init__(self, keepdims=False, name=None):
        self.keepdims = keepdims
        super().__init__(name=name)

    def __call__(self, x):
        return x.max(axis=tuple(range(1, x.ndim - 1)), keepdims=self.keepdims)


class GlobalAvgPool(GlobalMaxPool):
    def __call__(self, x, mask=None):
        if mask is None:
            return x.mean(axis=tuple(range(1, x.ndim - 1)), keepdims=self.keepdims)
        counted = mask[..., None].astype(x.dtype)
        # the mean of the unmasked steps, as Keras
        return (x * counted).sum(axis=1, keepdims=self.keepdims) / counted.sum(axis=1, keepdims=self.keepdims)


class Embedding(Layer):
    def __init__(self, embeddings, name=None):
        super().__init__(embeddings=embeddings, name=name)

    def __call__(self, ids):
        return self.embeddings[ids]


class Masking(Layer):
    def __init__(self, value=0.0, name=None):
        self.value = value
        super().__init__(name=name)

    def __call__(self, x):
        mask = (x != self.value).any(axis=-1)
        return x * mask[..., None], mask


class Recurrent(Layer):
    """Base of the recurrent layers. One GEMM projects every timestep's input; then each step
    multiplies the state by the recurrent kernel. At a masked step the state is kept, and the
    output repeats the previous one, or is zero with ``zero_output_for_mask`` (as Keras)."""

    bias = 0.0
    zero_output_for_mask = False

    def __init__(
        self,
        kernel,
        recurrent_kernel,
        bias=None,
        activation=tanh,
        recurrent_activation=sigmoid,
        return_sequences=False,
        go_backwards=False,
        name=None,
    ):
        self.activation, self.recurrent_activation = activation, recurrent_activation
        self.return_sequences, self.go_backwards = return_sequences, go_backwards
        super().__init__(kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, name=name)

    def refresh(self):
        super().refresh()
        self.units = len(self.recurrent_kernel)
        self.input_bias = self.bias

    def initial_state(self, n):
        return (np.zeros((n, self.units), dtype=np.float32),)

    def __call__(self, x, mask=None):
        n, steps, features = x.shape
        inputs = x.reshape(n * steps, features) @ self.kernel  # every step at once; rows stay batch-major
        if np.ndim(self.input_bias):
            inputs += self.input_bias
        inputs = inputs.reshape(n, steps, -1)
        outputs = np.empty((n, steps, self.units), dtype=np.float32) if self.return_sequences else None
        state = self.initial_state(n)
        for i, t in enumerate(range(steps - 1, -1, -1) if self.go_backwards else range(steps)):
            new = self.step(inputs[:, t], *state)
            if mask is None:
                state = new
            else:
                keep = mask[:, t, None]
                for before, now in zip(state, new, strict=True):
                    np.copyto(before, now, where=keep)  # in place: the state arrays are this call's own
            if outputs is None:
                continue
            outputs[:, i] = state[0]
            if mask is not None and self.zero_output_for_mask:
                outputs[:, i] *= keep
        return state[0] if outputs is None else outputs


class SimpleRNN(Recurrent):
    def __init__(
        self,
        kernel,
        recurrent_kernel,
        bias=None,
        activation=tanh,
        return_sequences=False,
        go_backwards=False,
        name=None,
    ):
        args = (activation, None, return_sequences, go_backwards)
        super().__init__(kernel, recurrent_kernel, bias, *args, name=name)

    def step(self, x, h):
        z = h @ self.recurrent_kernel
        z += x
        return (self.activation(z),)


class LSTM(Recurrent):
    def initial_state(self, n):
        return super().initial_state(n) + super().initial_state(n)  # h and c, two arrays (updated in place)

    def step(self, x, h, c):
        z = h @ self.recurrent_kernel
        z += x
        u, gate = self.units, self.recurrent_activation
        input_forget = gate(z[:, : 2 * u])  # Keras order i, f, c, o: one call for i and f
        c = input_forget[:, u:] * c
        c += input_forget[:, :u] * self.activation(z[:, 2 * u : 3 * u])
        h = self.activation(c)
        h *= gate(z[:, 3 * u :])
        return h, c


class GRU(Recurrent):
    """Keras gate order z, r, h. reset_after=True (Keras 3's default) keeps a separate recurrent
    bias and resets after the matmul; reset_after=False resets the state before it."""

    def __init__(self, kernel, recurrent_kernel, bias=None, reset_after=True, **options):
        self.reset_after = reset_after
        super().__init__(kernel, recurrent_kernel, bias, **options)

    def refresh(self):
        super().refresh()
        # reset_after: rows (input bias, recurrent bias); otherwise one input bias, or none.
        self.input_bias, self.recurrent_bias = self.bias if np.ndim(self.bias) == 2 else (self.bias, 0.0)
        self.gate_kernel, self.candidate_kernel = np.split(self.recurrent_kernel, [2 * self.units], axis=1)

    def step(self, x, h):
        x_z, x_r, x_h = np.split(x, 3, axis=1)
        if self.reset_after:
            h_z, h_r, h_h = np.split(h @ self.recurrent_kernel + self.recurrent_bias, 3, axis=1)
        else:
            h_z, h_r = np.split(h @ self.gate_kernel, 2, axis=1)
        z, r = self.recurrent_activation(x_z + h_z), self.recurrent_activation(x_r + h_r)
        candidate = self.activation(x_h + (r * h_h if self.reset_after else (r * h) @ self.candidate_kernel))
        return (z * h + (1.0 - z) * candidate,)


class Bidirectional(Layer):
    """Runs ``forward`` and ``backward`` (the same layer reading the other way) and merges them.
    Its weights are theirs, prefixed ``forward_`` and ``backward_``."""

    def __init__(self, forward, backward, merge="concat", name=None):
        self.forward, self.backward, self.merge = forward, backward, merge
        for layer in (forward, backward):
            layer.zero_output_for_mask = layer.return_sequences  # as Keras's Bidirectional forces
        super().__init__(name=name)

    @property
    def weights(self):
        return {f"{prefix}_{name}": w for prefix, layer in self.directions() for name, w in layer.weights.items()}

    @weights.setter
    def weights(self, arrays):
        for prefix, layer in self.directions():
            layer.weights = {name[len(prefix) + 1 :]: w for name, w in arrays.items() if name.startswith(prefix + "_")}

    def directions(self):
        return ("forward", self.forward), ("backward", self.backward)

    def __call__(self, x, mask=None):
        forward, backward = self.forward(x, mask), self.backward(x, mask)
        if self.backward.return_sequences:
            backward = backward[:, ::-1]  # back into input order
        if self.merge == "concat":
            return np.concatenate([forward, backward], axis=-1)
        if self.merge == "sum":
            return forward + backward
        if self.merge == "mul":
            return forward * backward
        return (forward + backward) / 2
