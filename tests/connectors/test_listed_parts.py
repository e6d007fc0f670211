"""A source's partitions ever listed, kept in the recovery store (connectors/listed_parts.py)."""

from __future__ import annotations

import pytest

from connectors.listed_parts import with_listed_before


def test_partitions_listed_before_stay_listed(tmp_path):
    assert with_listed_before(tmp_path, "load", ["b", "a"]) == ["a", "b"]
    assert with_listed_before(tmp_path, "load", ["c"]) == ["a", "b", "c"]
    assert with_listed_before(tmp_path, "other step", ["z"]) == ["z"]  # per step
    assert with_listed_before(tmp_path, "load", []) == ["a", "b", "c"]
    # Without a recovery store nothing resumes: the current ones are all there is.
    assert with_listed_before(None, "load", ["c"]) == ["c"]
    assert with_listed_before(tmp_path / "absent", "load", ["c"]) == ["c"]
    assert not list(tmp_path.glob(".listed-*"))  # no temporary left behind


def test_a_list_that_does_not_read_back_stops_with_its_path(tmp_path):
    (tmp_path / "listed-parts-load.json").write_text('["a", ')
    with pytest.raises(ValueError, match="listed-parts-load.json does not read back"):
        with_listed_before(tmp_path, "load", ["a"])
    (tmp_path / "listed-parts-load.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="is not a list of names"):
        with_listed_before(tmp_path, "load", ["a"])
