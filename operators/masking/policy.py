"""The masking policy: which column holds which class of data and how it is masked.

Built from the ``masking`` section of the configuration (see config/masking.example.json)::

    {"masking": {
      "version": 1,
      "hmac": {"key": "openbao:cdc/masking#hmac_key"},
      "tokenize": {"mount": "transit", "key": "cdc-tokenization", "key_version": 1,
                   "cache_entries": 100000},
      "unclassified_strategy": "hmac",
      "unlisted": "detect",
      "tables": {
        "<keyspace>": {
          "<table>": {
            "columns": {
              "<column>": {"class": "ssn", "strategy": "tokenize", "context": "patient-ssn"},
              "<column>": {"class": "none", "reason": "host name of the sending device"}
            }}}}}}

Column entries:
- ``class`` (required): a PII class (`PII_CLASSES`), a PHI class (`PHI_CLASSES`) or ``none``.
- ``strategy``: ``hmac``, ``tokenize``, ``redact`` or ``pass``. Required for a PII/PHI class;
  a ``none`` column passes through and may not name another strategy.
- ``reason``: a written reason, required for every exemption (class ``none`` or strategy
  ``pass``); blank or placeholder reasons ("n/a", "todo", ...) are rejected.
- ``context`` (tokenize only): the tokenization domain. Defaults to ``<keyspace>.<table>.<column>``
  so equal values in different columns get unrelated tokens; columns that must join (a patient
  id in two tables) name the same context.
- ``_comment`` is allowed in every object and ignored.

Columns the policy does not list (a new column, a renamed one, a new table): with ``"unlisted":
"detect"`` (the default) masked with ``unclassified_strategy`` (``hmac`` unless set; ``pass`` is
not allowed) when their name looks like PII/PHI (classify.py), passed through otherwise; with
``"unlisted": "mask"`` every one is masked with ``unclassified_strategy`` (fail-closed: a column
renamed from ``ssn`` to ``national_id``, or a UDT holding an e-mail address, never leaves in
clear; list the columns that may pass, with a reason).

``hmac.key`` must be a secret reference (``openbao:path#field``, ``env:NAME`` or ``file:path``,
see connectors/secrets.py), never a key; it is required when anything (including the
fail-closed default) uses hmac, and ``tokenize`` when anything tokenizes.

Errors are `ConfigError`s naming the exact key path and the problem. They quote keys, class and
strategy names; never reasons or anything given where a secret reference was expected.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from operators.masking.classify import sensitive_term
from operators.masking.errors import ConfigError

__all__ = [
    "PHI_CLASSES",
    "PII_CLASSES",
    "Basis",
    "ColumnRule",
    "ConfigError",
    "DataClass",
    "HmacSettings",
    "MaskingPolicy",
    "Strategy",
    "TransitSettings",
    "Unlisted",
    "load_policy",
]

FORMAT_VERSION = 1
# OpenBao's default listener max_request_json_strings (1000), minus "batch_input", over the five
# strings of one batch item (see TransitSettings).
DEFAULT_MAX_BATCH_ITEMS = (1000 - 1) // 5
# Tokens remembered per process: about 150 bytes each (a digest and a token), so ~15 MB.
DEFAULT_TOKEN_CACHE_ENTRIES = 100_000
SECRET_SCHEMES = ("openbao", "vault", "env", "file")
_PLACEHOLDER_REASONS = frozenset({"", "-", "?", "x", "n/a", "na", "none", "todo", "tbd", "tbc"})


class Strategy(enum.StrEnum):
    HMAC = "hmac"          # keyed HMAC-SHA256, lower-case hex
    TOKENIZE = "tokenize"  # OpenBao transit convergent encryption, reversible with decrypt
    REDACT = "redact"      # NULL
    PASS = "pass"  # noqa: S105 - not a password: unchanged, an exemption with a reason


class DataClass(enum.StrEnum):
    FIRST_NAME = "first_name"
    LAST_NAME = "last_name"
    FULL_NAME = "full_name"
    EMAIL = "email"
    PHONE = "phone"
    SSN = "ssn"
    ADDRESS = "address"
    DATE_OF_BIRTH = "date_of_birth"
    OTHER_PII = "other_pii"
    MEDICAL_RECORD_NUMBER = "medical_record_number"
    DIAGNOSIS = "diagnosis"
    PRESCRIPTION = "prescription"
    LAB_RESULT = "lab_result"
    OTHER_PHI = "other_phi"
    NONE = "none"
    # Never written in a policy: a column the policy does not list but whose name looks
    # sensitive (masked fail-closed).
    UNCLASSIFIED = "unclassified"


PII_CLASSES = frozenset({
    DataClass.FIRST_NAME, DataClass.LAST_NAME, DataClass.FULL_NAME, DataClass.EMAIL,
    DataClass.PHONE, DataClass.SSN, DataClass.ADDRESS, DataClass.DATE_OF_BIRTH,
    DataClass.OTHER_PII,
})
PHI_CLASSES = frozenset({
    DataClass.MEDICAL_RECORD_NUMBER, DataClass.DIAGNOSIS, DataClass.PRESCRIPTION,
    DataClass.LAB_RESULT, DataClass.OTHER_PHI,
})
_CONFIGURABLE_CLASSES = (
    sorted(PII_CLASSES) + sorted(PHI_CLASSES) + [DataClass.NONE]
)


class Basis(enum.StrEnum):
    """Why a column gets its rule."""

    POLICY = "policy"      # the policy lists the column
    DETECTED = "detected"  # not listed, name looks sensitive: masked fail-closed
    UNLISTED = "unlisted"  # not listed, name does not look sensitive: passes through
    UNLISTED_MASKED = "unlisted_masked"  # not listed, the policy masks every such column


class Unlisted(enum.StrEnum):
    """What happens to a column the policy does not list."""

    DETECT = "detect"  # masked if its name looks sensitive, else passed through
    MASK = "mask"      # masked, whatever its name


@dataclass(frozen=True)
class ColumnRule:
    """How one column is masked. `context` is the tokenization context (tokenize only);
    `matched` the word of the name that made a DETECTED column look sensitive."""

    strategy: Strategy
    data_class: DataClass
    basis: Basis
    reason: str | None = field(default=None, repr=False)
    context: str | None = None
    matched: str | None = None


@dataclass(frozen=True)
class HmacSettings:
    """`key` is a secret reference; the key is the UTF-8 encoding of the secret's value."""

    key: str


@dataclass(frozen=True)
class TransitSettings:
    """OpenBao transit key used for tokenization.

    `key_version` is pinned: a rotated key must not change the tokens of primary keys.
    `max_batch_items`: distinct values per transit request; a micro-batch with more costs
    more round trips. The default is the most OpenBao's listener accepts by default: it refuses
    request JSON with more than ``max_request_json_strings`` (1000) strings and each item costs
    five (plaintext, context, key_version keys; plaintext and context values), plus one for
    ``batch_input``. Raise both together.
    `cache_entries`: tokens remembered per process (operators/masking/token_cache.py: keyed
    digests and tokens, no plaintext), so a value is sent once, not with every change of its
    row; 0: none."""

    key: str
    mount: str = "transit"
    key_version: int = 1
    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    cache_entries: int = DEFAULT_TOKEN_CACHE_ENTRIES


@dataclass(frozen=True)
class MaskingPolicy:
    """A validated policy (build it with `from_mapping` or `load_policy`)."""

    columns: Mapping[tuple[str, str, str], ColumnRule]
    hmac: HmacSettings | None
    tokenize: TransitSettings | None
    unclassified_strategy: Strategy = Strategy.HMAC
    root: str = "masking"
    unlisted: Unlisted = Unlisted.DETECT

    def rule_for(self, keyspace: str, table: str, column: str) -> ColumnRule:
        """The column's rule: the policy's entry, else fail-closed detection (or, with
        `unlisted` mask, masking whatever the name), else pass."""
        listed = self.columns.get((keyspace, table, column))
        if listed is not None:
            return listed
        term = sensitive_term(column)
        if term is None and self.unlisted is Unlisted.DETECT:
            return ColumnRule(Strategy.PASS, DataClass.NONE, Basis.UNLISTED)
        strategy = self.unclassified_strategy
        return ColumnRule(
            strategy,
            DataClass.UNCLASSIFIED,
            Basis.DETECTED if term is not None else Basis.UNLISTED_MASKED,
            context=f"{keyspace}.{table}.{column}" if strategy is Strategy.TOKENIZE else None,
            matched=term,
        )

    def key_path(self, keyspace: str, table: str, column: str) -> str:
        """Where a column's entry lives (or would live) in the configuration."""
        return f"{self.root}.tables.{keyspace}.{table}.columns.{column}"

    def uses(self, strategy: Strategy) -> bool:
        """Whether any listed column, or the fail-closed default, uses this strategy."""
        return strategy is self.unclassified_strategy or any(
            rule.strategy is strategy for rule in self.columns.values()
        )

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], *, path: str = "masking") -> MaskingPolicy:
        """Validate the ``masking`` section (a parsed JSON object); `path` prefixes error paths.

        Raises ConfigError naming the first problem's key path."""
        return _Builder(path).policy(section)


def load_policy(file: str | Path) -> MaskingPolicy:
    """Read a JSON file whose top-level object has a ``masking`` section.

    Duplicate keys are errors (JSON parsers silently keep the last one, which would let a
    second entry quietly unmask a column)."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(file), f"cannot read: {error.strerror}") from None
    try:
        document = json.loads(text, object_pairs_hook=_Object.from_pairs)
    except json.JSONDecodeError as error:
        raise ConfigError(
            str(file), f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(document, Mapping):
        raise ConfigError(str(file), "expected a JSON object with a 'masking' key")
    _check_duplicates(document, "")
    if "masking" not in document:
        raise ConfigError(f"{file}: masking", "missing")
    # A misspelt or misplaced section ("tables" beside "masking", say) must not be ignored.
    unknown = sorted(set(document) - {"masking", "_comment"})
    if unknown:
        raise ConfigError(f"{file}: {unknown[0]}", "is not a known key (a policy file holds"
                                                   " \"masking\" and \"_comment\" only)")
    return MaskingPolicy.from_mapping(document["masking"])


class _Object(dict):
    """A parsed JSON object that remembers which keys appeared more than once."""

    duplicates: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _Object:
        made = cls(pairs)
        if len(made) != len(pairs):
            seen: set[str] = set()
            made.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))
        return made


def _check_duplicates(value: Any, path: str) -> None:
    if isinstance(value, _Object):
        if value.duplicates:
            where = f"{path}.{value.duplicates[0]}" if path else value.duplicates[0]
            raise ConfigError(where, "defined more than once")
        for key, item in value.items():
            _check_duplicates(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_duplicates(item, f"{path}[{index}]")


def _type_name(value: Any) -> str:
    return {
        dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
        float: "a number", type(None): "null",
    }.get(type(value), "an object" if isinstance(value, Mapping) else type(value).__name__)


def _one_of(values: Any) -> str:
    return ", ".join(str(v) for v in values)


class _Builder:
    def __init__(self, root: str) -> None:
        self.root = root

    def mapping(self, value: Any, path: str, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected {what}, found {_type_name(value)}")
        return value

    def keys(self, value: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
        for key in value:
            if not isinstance(key, str) or not key:
                raise ConfigError(path, "keys must be non-empty strings")
            if key not in allowed and key != "_comment":
                raise ConfigError(
                    f"{path}.{key}", f"unknown key; expected one of {_one_of(allowed)}"
                )

    def named(self, value: Mapping[str, Any], path: str) -> list[tuple[str, Any]]:
        """The entries of an object keyed by schema names (keyspaces, tables, columns)."""
        for key in value:
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(path, "keyspace, table and column names must be non-empty")
        return [(key, item) for key, item in value.items() if key != "_comment"]

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(path, f"expected a non-empty string, found {_type_name(value)}")
        return value

    def policy(self, section: Any) -> MaskingPolicy:
        root = self.root
        section = self.mapping(section, root, "an object")
        self.keys(section, root, ("version", "hmac", "tokenize", "unclassified_strategy",
                                  "unlisted", "tables"))
        version = section.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise ConfigError(
                f"{root}.version", f"unsupported; this code reads version {FORMAT_VERSION}"
            )

        unclassified = Strategy.HMAC
        if "unclassified_strategy" in section:
            allowed = (Strategy.HMAC, Strategy.TOKENIZE, Strategy.REDACT)
            unclassified = self.strategy(
                section["unclassified_strategy"], f"{root}.unclassified_strategy", allowed
            )

        unlisted = Unlisted.DETECT
        if "unlisted" in section:
            choices = tuple(u.value for u in Unlisted)
            if section["unlisted"] not in choices:
                raise ConfigError(f"{root}.unlisted", f"must be one of {', '.join(choices)}")
            unlisted = Unlisted(section["unlisted"])

        columns: dict[tuple[str, str, str], ColumnRule] = {}
        tables_path = f"{root}.tables"
        tables = self.mapping(
            section.get("tables", {}), tables_path, "an object (keyspace -> tables)"
        )
        for keyspace, keyspace_tables in self.named(tables, tables_path):
            ks_path = f"{tables_path}.{keyspace}"
            keyspace_tables = self.mapping(keyspace_tables, ks_path, "an object (table -> columns)")
            for table, entry in self.named(keyspace_tables, ks_path):
                table_path = f"{ks_path}.{table}"
                entry = self.mapping(entry, table_path, "an object with 'columns'")
                self.keys(entry, table_path, ("columns",))
                cols_path = f"{table_path}.columns"
                cols = self.mapping(
                    entry.get("columns", {}), cols_path, "an object (column -> rule)"
                )
                for column, rule in self.named(cols, cols_path):
                    columns[(keyspace, table, column)] = self.column(
                        rule, f"{cols_path}.{column}", f"{keyspace}.{table}.{column}"
                    )

        strategies = {rule.strategy for rule in columns.values()} | {unclassified}
        hmac = None
        if "hmac" in section or Strategy.HMAC in strategies:
            hmac = self.hmac(section.get("hmac"), f"{root}.hmac")
        tokenize = None
        if "tokenize" in section or Strategy.TOKENIZE in strategies:
            tokenize = self.transit(section.get("tokenize"), f"{root}.tokenize")
        return MaskingPolicy(MappingProxyType(columns), hmac, tokenize, unclassified, root,
                             unlisted)

    def strategy(
        self, value: Any, path: str, allowed: tuple[Strategy, ...] = tuple(Strategy)
    ) -> Strategy:
        if not isinstance(value, str) or value not in {s.value for s in allowed}:
            shown = repr(value) if isinstance(value, str) else _type_name(value)
            raise ConfigError(path, f"{shown} is not one of {_one_of(allowed)}")
        return Strategy(value)

    def column(self, rule: Any, path: str, default_context: str) -> ColumnRule:
        rule = self.mapping(rule, path, "an object with 'class' and 'strategy'")
        self.keys(rule, path, ("class", "strategy", "reason", "context"))
        if "class" not in rule:
            raise ConfigError(f"{path}.class", f"missing; one of {_one_of(_CONFIGURABLE_CLASSES)}")
        raw_class = rule["class"]
        if not isinstance(raw_class, str) or raw_class not in _CONFIGURABLE_CLASSES:
            shown = repr(raw_class) if isinstance(raw_class, str) else _type_name(raw_class)
            raise ConfigError(
                f"{path}.class", f"{shown} is not one of {_one_of(_CONFIGURABLE_CLASSES)}"
            )
        data_class = DataClass(raw_class)

        if "strategy" in rule:
            strategy = self.strategy(rule["strategy"], f"{path}.strategy")
        elif data_class is DataClass.NONE:
            strategy = Strategy.PASS
        else:
            raise ConfigError(
                f"{path}.strategy", f"missing for class {data_class}; one of {_one_of(Strategy)}"
            )
        if data_class is DataClass.NONE and strategy is not Strategy.PASS:
            raise ConfigError(
                f"{path}.strategy",
                f"class none passes through; use a PII/PHI class to {strategy} this column",
            )

        reason = rule.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ConfigError(f"{path}.reason", f"expected a string, found {_type_name(reason)}")
        if strategy is Strategy.PASS and (
            reason is None or reason.strip().lower() in _PLACEHOLDER_REASONS
        ):
            raise ConfigError(
                f"{path}.reason",
                "an exemption (class none or strategy pass) needs a written reason",
            )

        context = None
        if "context" in rule:
            if strategy is not Strategy.TOKENIZE:
                raise ConfigError(f"{path}.context", f"only for strategy tokenize, not {strategy}")
            context = self.string(rule["context"], f"{path}.context")
        elif strategy is Strategy.TOKENIZE:
            context = default_context
        return ColumnRule(strategy, data_class, Basis.POLICY, reason, context)

    def hmac(self, value: Any, path: str) -> HmacSettings:
        if value is None:
            raise ConfigError(
                path, "missing: hmac is used (by a column or as unclassified_strategy)"
            )
        value = self.mapping(value, path, "an object with 'key'")
        self.keys(value, path, ("key",))
        if "key" not in value:
            raise ConfigError(f"{path}.key", "missing; a secret reference such as "
                              "openbao:cdc/masking#hmac_key")
        key = value["key"]
        if not isinstance(key, str) or not _is_secret_reference(key):
            # Never echo it: a malformed reference may be a pasted key.
            raise ConfigError(
                f"{path}.key",
                "must be a secret reference (openbao:<path>#<field>, env:<NAME> or file:<path>), "
                "never the key itself",
            )
        return HmacSettings(key)

    def transit(self, value: Any, path: str) -> TransitSettings:
        if value is None:
            raise ConfigError(path, "missing: a column uses strategy tokenize")
        value = self.mapping(value, path, "an object with 'key'")
        self.keys(value, path, ("mount", "key", "key_version", "max_batch_items",
                                "cache_entries"))
        if "key" not in value:
            raise ConfigError(f"{path}.key", "missing; the name of an OpenBao transit key")
        key = self.string(value["key"], f"{path}.key")
        mount = self.string(value.get("mount", "transit"), f"{path}.mount")
        key_version = self.positive(value.get("key_version", 1), f"{path}.key_version")
        max_items = self.positive(
            value.get("max_batch_items", DEFAULT_MAX_BATCH_ITEMS), f"{path}.max_batch_items"
        )
        cache = value.get("cache_entries", DEFAULT_TOKEN_CACHE_ENTRIES)
        if not (type(cache) is int and cache == 0):  # 0 turns the cache off
            cache = self.positive(cache, f"{path}.cache_entries")
        return TransitSettings(key, mount.strip("/"), key_version, max_items, cache)

    def positive(self, value: Any, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            shown = repr(value) if isinstance(value, int | float) else _type_name(value)
            raise ConfigError(path, f"expected a positive integer, found {shown}")
        return value


def _is_secret_reference(text: str) -> bool:
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in SECRET_SCHEMES or not rest or any(c.isspace() for c in text):
        return False
    if scheme in ("openbao", "vault"):
        path, hash_, field_ = rest.partition("#")
        return bool(path and hash_ and field_)
    return True
