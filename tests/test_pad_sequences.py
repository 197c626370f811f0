"""layerdsl.preprocessing.pad_sequences: NumPy-only, checked against keras.utils.pad_sequences.

The tests without Keras spell the expected arrays out; the Keras tests compare
results, dtypes and errors (type and message) with Keras's own function.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerdsl.preprocessing import pad_sequences

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SEQ = [[1], [2, 3], [4, 5, 6]]


def keras_pad():
    return pytest.importorskip("keras").utils.pad_sequences


def outcome(fn, *args, **kwargs):
    """The array fn returns, or the type and message of what it raises."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        return type(exc), str(exc)


def assert_same_as_keras(*args, **kwargs):
    ours = outcome(pad_sequences, *args, **kwargs)
    theirs = outcome(keras_pad(), *args, **kwargs)
    if isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray), ours
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
        assert ours.shape == theirs.shape
    else:
        assert ours == theirs


# Written-out expectations, no Keras needed.


def check(result, expected, dtype="int32"):
    assert result.dtype == np.dtype(dtype)
    assert result.shape == np.asarray(expected).shape
    np.testing.assert_array_equal(result, np.asarray(expected, dtype=dtype))


def test_defaults_pad_and_truncate_pre():
    check(pad_sequences(SEQ), [[0, 0, 1], [0, 2, 3], [4, 5, 6]])
    check(pad_sequences(SEQ, maxlen=2), [[0, 1], [2, 3], [5, 6]])


def test_post_padding_and_truncation():
    check(pad_sequences(SEQ, padding="post"), [[1, 0, 0], [2, 3, 0], [4, 5, 6]])
    check(pad_sequences(SEQ, maxlen=2, truncating="post"), [[0, 1], [2, 3], [4, 5]])
    check(pad_sequences(SEQ, maxlen=2, padding="post", truncating="post"), [[1, 0], [2, 3], [4, 5]])


def test_value_and_float_dtype():
    check(pad_sequences(SEQ, value=-1), [[-1, -1, 1], [-1, 2, 3], [4, 5, 6]])
    check(pad_sequences([[0.5], [1.25, 2.0]], dtype="float32", value=-0.5), [[-0.5, 0.5], [1.25, 2.0]], "float32")


def test_float_values_with_int_dtype_are_cast():
    check(pad_sequences([[1.7, 2.2], [3.9]], value=0.5), [[1, 2], [0, 3]])


def test_empty_inputs():
    check(pad_sequences([], maxlen=3), np.zeros((0, 3)))
    check(pad_sequences([[], []]), np.zeros((2, 0)))
    check(pad_sequences([[], [7]], maxlen=2), [[0, 0], [0, 7]])
    with pytest.raises(ValueError, match="zero-size array"):
        pad_sequences([])  # Keras takes np.max of no lengths


def test_maxlen_zero():
    check(pad_sequences([[1, 2], [3]], maxlen=0, truncating="post"), np.zeros((2, 0)))
    check(pad_sequences([[], []], maxlen=0), np.zeros((2, 0)))
    # As in Keras: s[-0:] keeps the whole sequence, which cannot fit in zero steps.
    with pytest.raises(ValueError, match="could not broadcast"):
        pad_sequences([[1, 2]], maxlen=0)


def test_trailing_dims_from_first_non_empty_sequence():
    seqs = [np.zeros((0, 2)), np.array([[1, 2]]), [[3, 4], [5, 6]]]
    check(pad_sequences(seqs), [[[0, 0], [0, 0]], [[0, 0], [1, 2]], [[3, 4], [5, 6]]])
    with pytest.raises(ValueError, match=r"Shape of sample \(3,\) of sequence at position 1 is different"):
        pad_sequences([[[1, 2]], [[1, 2, 3]]])


def test_strings():
    out = pad_sequences([["a", "bb"], ["c"]], dtype=object, value="x")
    assert out.dtype == object
    assert out.tolist() == [["a", "bb"], ["x", "c"]]
    with pytest.raises(ValueError, match="You should set `dtype=object`"):
        pad_sequences([["a"]], value="x")


def test_errors():
    with pytest.raises(ValueError, match='Padding type "middle" not understood'):
        pad_sequences(SEQ, padding="middle")
    with pytest.raises(ValueError, match='Truncating type "middle" not understood'):
        pad_sequences(SEQ, truncating="middle")
    with pytest.raises(ValueError, match=r"`sequences` must be iterable\."):
        pad_sequences(5)
    with pytest.raises(ValueError, match="Found non-iterable: 2"):
        pad_sequences([[1], 2])


def test_import_does_not_load_frameworks():
    code = (
        "import sys, layerdsl.preprocessing\n"
        "layerdsl.preprocessing.pad_sequences([[1]])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'torch'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Against Keras.

EDGE_CASES = [
    pytest.param(([],), {}, id="empty-list"),
    pytest.param(([],), {"maxlen": 3}, id="empty-list-maxlen"),
    pytest.param(([[], []],), {}, id="all-empty"),
    pytest.param(([[], []],), {"padding": "bad", "truncating": "bad"}, id="all-empty-bad-options"),
    pytest.param(([[1, 2], [3]],), {"maxlen": 0}, id="maxlen0-pre"),
    pytest.param(([[1, 2], [3]],), {"maxlen": 0, "truncating": "post"}, id="maxlen0-post"),
    pytest.param(([[1, 2], [3]],), {"maxlen": 0, "truncating": "post", "padding": "bad"}, id="maxlen0-bad-padding"),
    pytest.param(([[1, 2], [3]],), {"maxlen": -1}, id="negative-maxlen"),
    pytest.param((SEQ,), {"padding": "bad"}, id="bad-padding"),
    pytest.param((SEQ,), {"truncating": "bad"}, id="bad-truncating"),
    pytest.param((SEQ,), {"padding": "bad", "truncating": "bad"}, id="bad-both"),
    pytest.param(([[1.7, 2.2], [3.9]],), {"value": 0.5}, id="floats-int-dtype"),
    pytest.param(([[1.7, 2.2], [3.9]],), {"value": -0.5, "dtype": "float64"}, id="float64"),
    pytest.param((SEQ,), {"value": np.inf, "dtype": "float16"}, id="inf-float16"),
    pytest.param(([[np.nan]],), {}, id="nan-int-dtype"),
    pytest.param(([[1000], [3]],), {"dtype": "int8"}, id="overflow"),
    pytest.param((SEQ,), {"dtype": None}, id="dtype-none"),
    pytest.param((SEQ,), {"dtype": bool}, id="dtype-bool"),
    pytest.param((SEQ,), {"value": "x"}, id="str-value-int-dtype"),
    pytest.param((SEQ,), {"value": "x", "dtype": "object"}, id="str-value-object-name"),
    pytest.param(([["a", "bb"], ["c"]],), {"value": "x", "dtype": object}, id="str-object"),
    pytest.param(([["a", "bb"], ["c"]],), {"value": "x", "dtype": "U2"}, id="str-unicode"),
    pytest.param(([[b"a"], [b"bb", b"c"]],), {"value": b"-", "dtype": "S2"}, id="bytes"),
    pytest.param(([np.ones((2, 3)), np.ones((1, 4))],), {}, id="ragged-trailing-arrays"),
    pytest.param(([[[1, 2], [3, 4]], [[5, 6, 7]]],), {}, id="ragged-trailing-lists"),
    pytest.param(([[[1, 2], [3]]],), {}, id="ragged-inside-first"),
    pytest.param(([np.zeros((0, 3)), np.ones((2, 3))],), {"padding": "post"}, id="empty-array-first"),
    pytest.param(([np.arange(12).reshape(4, 3), np.ones((2, 3))],), {"maxlen": 3}, id="trailing-dims"),
    pytest.param((np.arange(12).reshape(3, 4),), {"maxlen": 2, "truncating": "post"}, id="2d-array-input"),
    pytest.param(((1, 2),), {}, id="non-iterable-items"),
    pytest.param(([[1], 2],), {}, id="non-iterable-second"),
    pytest.param((5,), {}, id="non-iterable"),
    pytest.param((iter([[1]]),), {}, id="iterator"),
]


@pytest.mark.parametrize(("args", "kwargs"), EDGE_CASES)
def test_edge_cases_match_keras(args, kwargs):
    assert_same_as_keras(*args, **kwargs)


int_seqs = st.lists(st.lists(st.integers(-1000, 1000), max_size=8), max_size=6)
options = {
    "maxlen": st.one_of(st.none(), st.integers(0, 10)),
    "padding": st.sampled_from(["pre", "post"]),
    "truncating": st.sampled_from(["pre", "post"]),
    "value": st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False)),
    "dtype": st.sampled_from(["int32", "float32", "int64"]),
}


@settings(max_examples=200, deadline=None)
@given(seqs=int_seqs, **options)
def test_random_int_sequences_match_keras(seqs, **kwargs):
    assert_same_as_keras(seqs, **kwargs)


@settings(max_examples=200, deadline=None)
@given(
    seqs=st.lists(st.integers(0, 6), max_size=5).flatmap(
        lambda lens: st.tuples(*(st.lists(st.integers(-9, 9), min_size=2 * n, max_size=2 * n) for n in lens))
    ),
    as_array=st.booleans(),
    **options,
)
def test_random_sequences_with_trailing_dims_match_keras(seqs, as_array, **kwargs):
    steps = [np.array(s).reshape(-1, 2) for s in seqs]
    assert_same_as_keras([s if as_array else s.tolist() for s in steps], **kwargs)
