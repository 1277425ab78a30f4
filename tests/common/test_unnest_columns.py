"""`common.db.unnest_columns`: rows as the column arrays of a set-wise statement."""

from __future__ import annotations

import pytest

from common.db import unnest_columns


def test_rows_become_one_array_per_column():
    assert unnest_columns([("a", 1), ("b", 2)]) == [["a", "b"], [1, 2]]
    assert unnest_columns([("a", 1)], width=2) == [["a"], [1]]


def test_no_rows_give_as_many_empty_arrays_as_the_statement_takes_when_it_says_how_many():
    # With none, zip gives no columns, and the statement failed with "the server expects 4 arguments for this query,
    # 1 was passed" (the broker watch's check, when no row of a partition was left to compare).
    assert unnest_columns([], width=3) == [[], [], []]
    with pytest.raises(ValueError, match="pass width="):
        unnest_columns([])


def test_rows_of_another_width_are_refused():
    with pytest.raises(ValueError, match="rows of 2 columns where 3 were expected"):
        unnest_columns([("a", 1)], width=3)
