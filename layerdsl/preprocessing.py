"""Data preprocessing helpers that need only NumPy.

`pad_sequences` gives the same arrays, dtypes and errors as
`keras.utils.pad_sequences`, without importing Keras.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["pad_sequences"]


def pad_sequences(
    sequences: Sequence[Any],
    maxlen: int | None = None,
    dtype: DTypeLike = "int32",
    padding: str = "pre",
    truncating: str = "pre",
    value: Any = 0.0,
) -> np.ndarray:
    """Pad (or truncate) sequences to a common length, like `keras.utils.pad_sequences`.

    Returns an array of shape `(len(sequences), maxlen) + sample_shape`, where
    `maxlen` defaults to the longest sequence and `sample_shape` is the shape of
    one step of the first non-empty sequence. Sequences shorter than `maxlen` are
    filled with `value` before (`padding="pre"`) or after (`"post"`) their data;
    longer ones lose steps at the start (`truncating="pre"`) or end (`"post"`).

    >>> pad_sequences([[1], [2, 3], [4, 5, 6]])
    array([[0, 0, 1],
           [0, 2, 3],
           [4, 5, 6]], dtype=int32)
    >>> pad_sequences([[1], [2, 3], [4, 5, 6]], maxlen=2, padding="post", truncating="post", value=-1)
    array([[ 1, -1],
           [ 2,  3],
           [ 4,  5]], dtype=int32)

    Quirks kept for parity with Keras: `padding` and `truncating` are only
    checked when a non-empty sequence is placed; `maxlen=None` on an empty list
    raises NumPy's empty-reduction error; and `maxlen=0` with `truncating="pre"`
    fails on any non-empty sequence (`s[-0:]` is the whole sequence).
    """
    if not hasattr(sequences, "__len__"):
        raise ValueError("`sequences` must be iterable.")

    lengths = []
    sample_shape: tuple[int, ...] | None = None
    for s in sequences:
        try:
            lengths.append(len(s))
            if sample_shape is None and len(s):
                sample_shape = np.asarray(s).shape[1:]
        except TypeError as e:
            raise ValueError(f"`sequences` must be a list of iterables. Found non-iterable: {s}") from e
    if sample_shape is None:
        sample_shape = ()

    if maxlen is None:
        maxlen = np.max(lengths)  # NumPy's error, as in Keras, when there are no sequences

    is_dtype_str = np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.bytes_)
    if isinstance(value, str) and dtype is not object and not is_dtype_str:
        raise ValueError(
            f"`dtype` {dtype} is not compatible with `value`'s type: {type(value)}\n"
            "You should set `dtype=object` for variable length strings."
        )

    out = np.full((len(sequences), maxlen, *sample_shape), value, dtype=dtype)
    for idx, s in enumerate(sequences):
        if not len(s):
            continue
        if truncating == "pre":
            kept = s[-maxlen:]
        elif truncating == "post":
            kept = s[:maxlen]
        else:
            raise ValueError(f'Truncating type "{truncating}" not understood')

        kept = np.asarray(kept, dtype=dtype)
        if kept.shape[1:] != sample_shape:
            raise ValueError(
                f"Shape of sample {kept.shape[1:]} of sequence at position {idx} "
                f"is different from expected shape {sample_shape}"
            )

        if padding == "post":
            out[idx, : len(kept)] = kept
        elif padding == "pre":
            out[idx, -len(kept) :] = kept
        else:
            raise ValueError(f'Padding type "{padding}" not understood')
    return out
