"""Percentiles from a histogram against numpy's own np.percentile (the independent truth)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gateway.histogram import percentiles_u16

QS = st.tuples(*[st.floats(0.0, 100.0, allow_nan=False)] * 3)
FRAMES = arrays(np.uint16, st.integers(1, 400), elements=st.integers(0, 65535) | st.integers(1000, 1010))


@settings(max_examples=200, deadline=None)
@given(FRAMES, QS)
def test_equal_to_numpys_linear_percentiles(a: np.ndarray, qs: tuple[float, ...]) -> None:
    assert percentiles_u16(a, qs) == pytest.approx(tuple(np.percentile(a.astype(np.float64), qs)), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(FRAMES, QS)
def test_of_a_table_equal_to_the_percentiles_of_the_looked_up_values(a: np.ndarray, qs: tuple[float, ...]) -> None:
    table = np.log1p(np.arange(1 << 16, dtype=np.float64))  # increasing, as the presentation's log table
    want = tuple(np.percentile(table[a], qs))
    assert percentiles_u16(a, qs, of=table) == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_an_empty_array_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentiles_u16(np.zeros(0, np.uint16), (50.0,))
