"""Masking: PII and PHI are hashed, tokenized or redacted before any row leaves for a destination.

Every row image passes through `Masker.mask_rows` (one micro-batch of one table at a time).
Each column gets a rule from the `MaskingPolicy` (policy.py: the configuration format, e.g.
config/masking.example.json):

- listed in the policy: its class (PII, PHI or ``none``) and strategy (``hmac``, ``tokenize``,
  ``redact``, ``pass``); exemptions (``none``, ``pass``) carry a written reason;
- not listed, but the name looks like PII/PHI (classify.py): masked anyway, fail-closed, with the
  policy's ``unclassified_strategy`` (hmac unless set);
- not listed, name not sensitive: passes through.

What each strategy outputs, how collections, tuples and UDTs are handled and how destination
types change: strategies.py (`masked_column_types` is for the sinks). Tokens: tokenizer.py.
Errors never contain a value, a key or a token (errors.py).
"""

from operators.masking.classify import sensitive_term, split_words
from operators.masking.errors import ConfigError, MaskingError, TokenizationError
from operators.masking.masker import AuditHook, BatchAudit, ColumnCount, Masker, SecretSource
from operators.masking.policy import (
    PHI_CLASSES,
    PII_CLASSES,
    Basis,
    ColumnRule,
    DataClass,
    HmacSettings,
    MaskingPolicy,
    Strategy,
    TransitSettings,
    load_policy,
)
from operators.masking.strategies import (
    HMAC_MIN_KEY_BYTES,
    CqlTypeLike,
    canonical_bytes,
    canonical_json,
    masked_column_types,
)
from operators.masking.tokenizer import OpenBaoTransitTokenizer, Tokenizer, TokenRequest

__all__ = [
    "HMAC_MIN_KEY_BYTES",
    "PHI_CLASSES",
    "PII_CLASSES",
    "AuditHook",
    "BatchAudit",
    "Basis",
    "ColumnCount",
    "ColumnRule",
    "ConfigError",
    "CqlTypeLike",
    "DataClass",
    "HmacSettings",
    "Masker",
    "MaskingError",
    "MaskingPolicy",
    "OpenBaoTransitTokenizer",
    "SecretSource",
    "Strategy",
    "TokenRequest",
    "TokenizationError",
    "Tokenizer",
    "TransitSettings",
    "canonical_bytes",
    "canonical_json",
    "load_policy",
    "masked_column_types",
    "sensitive_term",
    "split_words",
]
