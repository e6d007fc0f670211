"""What each strategy does to a value, and what a masked column's type becomes.

Values are those of a row image (cassandra-driver types). NULL (None) is never masked: a NULL is
not PII, and it stays None under every strategy.

hmac
    ``hmac.new(key, canonical_bytes(value), sha256).hexdigest()``: 64 lower-case hex characters.
    The key is the UTF-8 encoding of the secret the reference names (at least 32 bytes). There is
    no per-column context: equal values give equal digests in every column and table, so hashed
    columns still join. Use tokenize where values of different columns must not link.
tokenize
    OpenBao transit encryption with a convergent, derived key (see tokenizer.py): the token is the
    transit ciphertext ``vault:v<key_version>:<base64>`` of ``canonical_bytes(value)`` under the
    column's context. Deterministic (same value + context + key version -> same token, in any
    process, after any restart), different per context, reversible only through transit decrypt.
redact
    None (NULL) for every type. It fits every destination type without changing it, and, unlike
    a marker string, it does not disclose whether the source had a value (the presence of a
    diagnosis is itself sensitive). Not allowed on primary-key columns (`masked_column_types`).
pass
    The value unchanged.

canonical_bytes: ``str`` -> UTF-8; ``bytes`` -> themselves; ``bool`` -> ``true``/``false``;
``int``/``Decimal``/``UUID``/inet/driver ``Date``/``Time``/``Duration`` -> ``str()``; ``float`` ->
``repr()``; ``datetime``/``date``/``time`` -> ``isoformat()``, all UTF-8 encoded. So the HMAC of a
text value is the HMAC of its UTF-8 bytes and a detokenized text value is the original string;
a detokenized non-text value comes back as that text form.

Collections are masked element by element: a list stays a list, a set (also the driver's
``SortedSet``) becomes a ``set`` and a map (also ``OrderedMap``) a ``dict`` whose keys AND values
are masked (map keys can hold PII as well). A tuple, a UDT (the driver's named-tuple class) and
any collection nested inside a collection element are masked whole: their canonical JSON
(`canonical_json`) is hashed or tokenized into one string. A UDT given as a dict cannot be told
from a map and is masked as a map.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import hmac
import ipaddress
import json
import math
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Literal, Protocol

from cassandra import util as cassandra_util

from operators.masking.policy import Basis, ConfigError, MaskingPolicy, Strategy

__all__ = [
    "HMAC_MIN_KEY_BYTES",
    "CqlTypeLike",
    "Shape",
    "UnsupportedValue",
    "canonical_bytes",
    "canonical_json",
    "hmac_hex",
    "masked_column_types",
    "rebuild",
    "split",
    "text_bytes",
    "texts_bytes",
]

HMAC_MIN_KEY_BYTES = 32
STRING_KINDS = frozenset({"text", "varchar", "ascii"})
# The driver decodes CQL sets to SortedSet, which is not a collections.abc.Set.
_SETS = (AbstractSet, cassandra_util.SortedSet)


class UnsupportedValue(TypeError):
    """A value of a type that has no canonical encoding; the message names the type only."""


# --- canonical encodings ------------------------------------------------------------------------

_TEXT_FORMS: tuple[tuple[type | tuple[type, ...], Callable[[Any], str]], ...] = (
    (bool, lambda v: "true" if v else "false"),  # before int: bool is an int
    (int, str),
    (float, repr),
    (decimal.Decimal, str),
    (uuid.UUID, str),
    ((datetime.datetime, datetime.date, datetime.time), lambda v: v.isoformat()),
    ((ipaddress.IPv4Address, ipaddress.IPv6Address), str),
    ((cassandra_util.Date, cassandra_util.Time, cassandra_util.Duration), str),
)


def _text_form(value: Any) -> str:
    for types, form in _TEXT_FORMS:
        if isinstance(value, types):
            return form(value)
    raise UnsupportedValue(f"no canonical form for a value of type {type(value).__name__}")


# A str's canonical bytes: UTF-8, lone surrogates kept (surrogatepass) rather than refused.
_TEXT_ENCODING, _TEXT_ERRORS = "utf-8", "surrogatepass"


def text_bytes(value: str) -> bytes:
    """The canonical bytes of a str (canonical_bytes)."""
    return value.encode(_TEXT_ENCODING, _TEXT_ERRORS)


def texts_bytes(values: list[str]) -> list[bytes]:
    """`text_bytes` of each of VALUES (a column's texts: operators/masking/masker.py). A
    comprehension: map() with methodcaller("encode", ...) took four times as long."""
    return [value.encode(_TEXT_ENCODING, _TEXT_ERRORS) for value in values]


def canonical_bytes(value: Any) -> bytes:
    """The bytes a scalar value is hashed or tokenized as (see the module docstring)."""
    if isinstance(value, str):
        return text_bytes(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return _text_form(value).encode("utf-8")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a UDT or a named tuple
        return {name: _jsonable(item) for name, item in zip(value._fields, value, strict=True)}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, _SETS):
        return sorted((_jsonable(item) for item in value), key=_dumps)
    if isinstance(value, Mapping):
        return sorted(([_jsonable(k), _jsonable(v)] for k, v in value.items()), key=_dumps)
    return _text_form(value)


def _dumps(value: Any) -> str:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    )


def canonical_json(value: Any) -> bytes:
    """One deterministic JSON text (UTF-8) for a whole value: tuples and lists as arrays, UDTs as
    objects keyed by field name, sets as sorted arrays, maps as arrays of [key, value] pairs
    sorted by key, scalars as JSON scalars or their canonical text (bytes as "0x<hex>")."""
    return text_bytes(_dumps(_jsonable(value)))


def hmac_hex(key: bytes, data: bytes) -> str:
    # The one-shot form: the same digest as hmac.new(...).hexdigest(), without a Python object.
    return hmac.digest(key, data, hashlib.sha256).hex()


# --- element-wise decomposition -----------------------------------------------------------------

Shape = Literal["scalar", "list", "set", "map"]


def _element_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, Mapping, *_SETS)):
        return canonical_json(value)
    return canonical_bytes(value)


def split(value: Any) -> tuple[Shape, list[bytes | None]]:
    """A non-None column value as its shape and the byte strings to mask (None elements stay).

    A map's leaves are key, value, key, value, ... in the map's order."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return "scalar", [canonical_bytes(value)]
    if isinstance(value, tuple):  # CQL tuple or UDT: masked whole
        return "scalar", [canonical_json(value)]
    if isinstance(value, list):
        return "list", [_element_bytes(item) for item in value]
    if isinstance(value, _SETS):
        return "set", [_element_bytes(item) for item in value]
    if isinstance(value, Mapping):
        leaves: list[bytes | None] = []
        for key, item in value.items():
            leaves.append(_element_bytes(key))
            leaves.append(_element_bytes(item))
        return "map", leaves
    return "scalar", [canonical_bytes(value)]


def rebuild(shape: Shape, masked: Iterable[str | None]) -> Any:
    """The masked value from `split`'s shape and the masked leaves, in the same order."""
    items = list(masked)
    if shape == "scalar":
        return items[0]
    if shape == "list":
        return items
    if shape == "set":
        return set(items)
    if shape == "map":
        return dict(zip(items[0::2], items[1::2], strict=True))
    raise ValueError(f"unknown shape {shape!r}")


# --- destination types --------------------------------------------------------------------------

class CqlTypeLike(Protocol):
    """What `masked_column_types` reads of a parsed CQL type (connectors.cassandra.values.CqlType).

    kind: a native name, "list", "set", "map", "tuple", "udt", "vector" or "custom"."""

    @property
    def kind(self) -> str: ...

    @property
    def cql(self) -> str: ...

    @property
    def frozen(self) -> bool: ...

    @property
    def params(self) -> tuple[Any, ...]: ...


def _masked_cql(cql_type: CqlTypeLike) -> str | None:
    """The CQL type of the hmac/tokenize output, or None if the type does not change."""
    kind = cql_type.kind
    if kind in ("list", "set"):
        if cql_type.params and cql_type.params[0].kind in STRING_KINDS:
            return None
        masked = f"{kind}<text>"
        return f"frozen<{masked}>" if cql_type.frozen else masked
    if kind == "map":
        if all(param.kind in STRING_KINDS for param in cql_type.params):
            return None
        masked = "map<text, text>"
        return f"frozen<{masked}>" if cql_type.frozen else masked
    if kind == "vector":
        return "list<text>"  # arrives as a Python list and is masked element-wise
    if kind in STRING_KINDS:
        return None  # digests and tokens are ASCII: they fit text, varchar and ascii alike
    return "text"  # scalars, tuples, UDTs, custom types


def masked_column_types(
    policy: MaskingPolicy,
    keyspace: str,
    table: str,
    columns: Mapping[str, CqlTypeLike],
    primary_key: Collection[str] = (),
) -> dict[str, str]:
    """The columns of a table whose CQL type changes after masking -> their masked CQL type.

    For the sinks when they create or alter destination tables: an hmac or tokenize column
    becomes ``text`` (collections: ``list<text>``, ``set<text>``, ``map<text, text>``, frozen
    kept; a vector: ``list<text>``); redact and pass keep the type. Columns whose type stays
    the same (e.g. a tokenized ``text``) are not in the result.

    Raises ConfigError if a primary-key column would be redacted (NULL keys cannot upsert)."""
    changed: dict[str, str] = {}
    for column, cql_type in columns.items():
        rule = policy.rule_for(keyspace, table, column)
        if rule.strategy is Strategy.REDACT and column in primary_key:
            if rule.basis is Basis.POLICY:
                path = f"{policy.key_path(keyspace, table, column)}.strategy"
            else:
                path = f"{policy.root}.unclassified_strategy"
            raise ConfigError(
                path,
                f"redact would write NULL into primary-key column {keyspace}.{table}.{column}; "
                "use hmac or tokenize for key columns",
            )
        if rule.strategy in (Strategy.HMAC, Strategy.TOKENIZE):
            masked = _masked_cql(cql_type)
            if masked is not None and masked != cql_type.cql:
                changed[column] = masked
    return changed
