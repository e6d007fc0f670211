"""Secrets by reference: configuration names where a secret lives, never the secret itself.

A reference is one of
  ``openbao:<path>#<field>``  a field of a KV v2 secret (mount ``secret`` unless BAO_KV_MOUNT says
                              otherwise), read through hvac; ``vault:`` is accepted as a synonym
  ``env:<NAME>``              an environment variable
  ``file:<path>``             a file's content, trailing newline removed (Kubernetes secret volumes)

OpenBao is reached at BAO_ADDR (or VAULT_ADDR), trusting BAO_CACERT (or VAULT_CACERT), with the
token in BAO_TOKEN (or VAULT_TOKEN) or in the file BAO_TOKEN_FILE. Errors name the reference and
what is wrong, never the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import hvac


class SecretError(RuntimeError):
    """A reference could not be resolved; the message names the reference, not any secret."""


@dataclass(frozen=True)
class OpenBaoSettings:
    address: str
    ca_cert: str | None
    token: str = field(repr=False)  # a secret: out of every repr, traceback and log line
    kv_mount: str = "secret"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> OpenBaoSettings:
        def first(*names: str) -> str | None:
            return next((environ[n] for n in names if environ.get(n)), None)

        address = first("BAO_ADDR", "VAULT_ADDR")
        if address is None:
            raise SecretError("an openbao: reference needs BAO_ADDR (or VAULT_ADDR) to be set")
        token = first("BAO_TOKEN", "VAULT_TOKEN")
        token_file = first("BAO_TOKEN_FILE", "VAULT_TOKEN_FILE")
        if token is None and token_file is not None:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as error:
                raise SecretError(f"BAO_TOKEN_FILE {token_file}: {error.strerror}") from None
        if not token:
            raise SecretError("an openbao: reference needs BAO_TOKEN or BAO_TOKEN_FILE")
        return cls(
            address,
            first("BAO_CACERT", "VAULT_CACERT"),
            token,
            environ.get("BAO_KV_MOUNT", "secret"),
        )


class SecretResolver:
    """Resolves references; one OpenBao client, created on first use and reused."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._environ = environ
        self._client: hvac.Client | None = None
        self._settings: OpenBaoSettings | None = None

    def resolve(self, reference: str) -> str:
        scheme, sep, rest = reference.partition(":")
        if not sep or not rest:
            raise SecretError(
                f"secret reference {reference!r} is not scheme:rest "
                "(openbao:path#field, env:NAME or file:path)"
            )
        if scheme in ("openbao", "vault"):
            return self._from_openbao(reference, rest)
        if scheme == "env":
            if rest not in self._environ:
                raise SecretError(f"secret reference {reference!r}: environment variable not set")
            return self._environ[rest]
        if scheme == "file":
            try:
                return Path(rest).read_text().rstrip("\n")
            except OSError as error:
                raise SecretError(f"secret reference {reference!r}: {error.strerror}") from None
        raise SecretError(
            f"secret reference {reference!r}: unknown scheme {scheme!r}"
            " (use openbao, vault, env or file)"
        )

    def _from_openbao(self, reference: str, rest: str) -> str:
        path, sep, field = rest.partition("#")
        if not sep or not path or not field:
            raise SecretError(f"secret reference {reference!r} needs a field: openbao:path#field")
        if self._client is None:
            self._settings = OpenBaoSettings.from_environment(self._environ)
            self._client = hvac.Client(
                url=self._settings.address,
                token=self._settings.token,
                verify=self._settings.ca_cert or True,
            )
        assert self._settings is not None
        try:
            secret = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._settings.kv_mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            raise SecretError(
                f"secret reference {reference!r}: no such secret in OpenBao"
            ) from None
        except hvac.exceptions.Forbidden:
            raise SecretError(
                f"secret reference {reference!r}: the token may not read it"
            ) from None
        data = secret["data"]["data"]
        if field not in data:
            raise SecretError(f"secret reference {reference!r}: the secret has no field {field!r}")
        return str(data[field])
