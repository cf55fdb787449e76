"""The memoised ``.npy`` parser used by SecAgg+'s mod and workflow: the same arrays and the same
refusals as ``np.load(allow_pickle=False)`` (Flower's ``bytes_to_ndarray``), first and later
parses alike; hostile tensors (object dtype, truncated data, altered headers) first."""

from __future__ import annotations

import importlib
from io import BytesIO

import numpy as np
import pytest
from flwr.common import Parameters, bytes_to_ndarray, ndarray_to_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from saip_fl import secagg_npy, secagg_prg


def _npy(
    array: np.ndarray, *, pickle: bool = False, version: tuple[int, int] | None = None
) -> bytes:
    buf = BytesIO()
    if version is None:
        np.save(buf, array, allow_pickle=pickle)
    else:
        np.lib.format.write_array(buf, array, version=version, allow_pickle=pickle)
    return buf.getvalue()


def test_fl_npy_object_arrays_are_refused_every_time() -> None:
    hostile = _npy(np.array([{"a": 1}, None], dtype=object), pickle=True)
    for _ in range(2):
        with pytest.raises(ValueError, match="allow_pickle"):
            secagg_npy.bytes_to_ndarray(hostile)
    assert hostile[: hostile.index(b"\n") + 1] not in secagg_npy._HEADERS


def test_fl_npy_truncated_and_altered_tensors_fail_like_numpy() -> None:
    good = _npy(np.arange(10, dtype=np.int64))
    secagg_npy.bytes_to_ndarray(good)  # header now memoised
    for bad in (good[:-1], good[:-80], good[:20]):
        with pytest.raises(ValueError) as ours:
            secagg_npy.bytes_to_ndarray(bad)
        with pytest.raises(ValueError) as theirs:
            bytes_to_ndarray(bad)
        assert str(ours.value) == str(theirs.value)
    # a header claiming more elements is a different header: NumPy parses it (and refuses)
    altered = good.replace(b"(10,)", b"(99,)")
    with pytest.raises(ValueError):
        secagg_npy.bytes_to_ndarray(altered)
    # trailing bytes are ignored by both, as np.load does
    np.testing.assert_array_equal(secagg_npy.bytes_to_ndarray(good + b"xx"), np.arange(10))


_DTYPES = st.sampled_from(["<i8", "<u4", "<f4", ">f8", "<c16", "|b1", "<f2", "|i1", "<M8[s]"])


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=_DTYPES.map(np.dtype),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
    st.booleans(),
    st.sampled_from([None, (1, 0), (2, 0), (3, 0)]),
)
def test_fl_npy_parses_exactly_like_numpy(
    array: np.ndarray, fortran: bool, version: tuple[int, int] | None
) -> None:
    if fortran:
        array = np.asfortranarray(array)
    data = _npy(array, version=version)
    expected = np.load(BytesIO(data), allow_pickle=False)
    for _ in range(2):  # the first parse fills the memo, the second uses it
        got = secagg_npy.bytes_to_ndarray(data)
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        assert got.flags.f_contiguous == expected.flags.f_contiguous
        assert got.flags.c_contiguous == expected.flags.c_contiguous
        assert got.flags.writeable
        np.testing.assert_array_equal(got, expected)
        got[...] = got  # a writable array of its own, not a view of the message bytes


def test_fl_npy_memo_is_bounded_and_installed() -> None:
    for n in range(secagg_npy.MAX_HEADERS + 5):
        secagg_npy.bytes_to_ndarray(ndarray_to_bytes(np.zeros(n + 1, np.float32)))
    assert len(secagg_npy._HEADERS) <= secagg_npy.MAX_HEADERS
    secagg_prg.install()
    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    wf = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    assert mod.parameters_to_ndarrays is secagg_npy.parameters_to_ndarrays
    assert wf.bytes_to_ndarray is secagg_npy.bytes_to_ndarray
    params = Parameters(tensors=[ndarray_to_bytes(np.ones((2, 2)))], tensor_type="numpy.ndarray")
    np.testing.assert_array_equal(secagg_npy.parameters_to_ndarrays(params)[0], np.ones((2, 2)))
