"""upsert_of: which columns of an image an upsert states, and its version and expiry."""

from __future__ import annotations

from connectors.cassandra.events import Position
from connectors.cassandra.images import Image, upsert_of
from connectors.cassandra.schema import build_schemas
from operators.row_ops import Source
from tests.connectors.cassandra.test_schema import T1, rows

SOURCE = Source("n1", Position(1, 2))
KEY = {"customer": "c", "region": "eu", "day": 1, "seq": 2}


def _orders():
    return build_schemas(rows())[0][T1]  # regular: total, tags, ship_to; static: note


def _never() -> int:
    raise AssertionError("the image has write times: no fallback version is needed")


def test_an_image_without_static_columns_is_stated_whole() -> None:
    image = Image(KEY, {"total": 5, "tags": None}, {"total": 30}, {"total": 9})
    op = upsert_of(_orders(), image, SOURCE, version_if_unknown=_never)
    assert (op.values, op.version, op.static) == ({"total": 5, "tags": None}, 30, False)
    assert op.values is not image.values  # the op's own dict: masking rewrites it
    op = upsert_of(_orders(), image, SOURCE, version_if_unknown=_never, version=100)
    assert (op.version, op.expires) == (100, 100 + 10 * 1_000_000)


def test_static_columns_are_left_out_of_the_row_unless_asked_for() -> None:
    # The static cell is the newest and expires first: neither may leak into the row's
    # version or expiry.
    image = Image(KEY, {"total": 5, "note": "n"}, {"total": 30, "note": 50},
                  {"total": 20, "note": 3})
    op = upsert_of(_orders(), image, SOURCE, version_if_unknown=_never, version=100)
    assert (op.values, op.version, op.expires) == ({"total": 5}, 100, 100 + 21 * 1_000_000)
    op = upsert_of(_orders(), image, SOURCE, version_if_unknown=_never)
    assert op.version == 30
    both = upsert_of(_orders(), image, SOURCE, version_if_unknown=_never, with_statics=True,
                     version=100)
    assert (both.values, both.expires) == ({"total": 5, "note": "n"}, 100 + 4 * 1_000_000)


def test_a_row_with_only_its_key_takes_the_fallback_version() -> None:
    image = Image(KEY, {"total": None}, {}, {})
    assert upsert_of(_orders(), image, SOURCE, version_if_unknown=lambda: 7).version == 7
