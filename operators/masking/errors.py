"""The masking step's errors. None of them ever carries a value, a key or a token: messages name
keyspaces, tables, columns, configuration key paths and secret references only."""

from __future__ import annotations

__all__ = ["ConfigError", "MaskingError", "TokenizationError"]


class ConfigError(ValueError):
    """An invalid masking policy. `path` is the key path (``masking.tables.ks.t.columns.c``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class MaskingError(RuntimeError):
    """A batch could not be masked; nothing of it may leave for a destination."""


class TokenizationError(MaskingError):
    """The tokenizer failed; the message names the key and the cause."""
