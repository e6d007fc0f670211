"""Secret references resolved against the real OpenBao of the stack (and env/file)."""

from __future__ import annotations

import pytest

from connectors.secrets import SecretError, SecretResolver


def test_pipeline_token_reads_a_database_credential_from_openbao(openbao_env):
    from devstack import credentials

    resolver = SecretResolver(openbao_env)
    password = resolver.resolve("openbao:cdc/postgres/pipeline#password")
    assert resolver.resolve("openbao:cdc/postgres/pipeline#username") == "cdc_pipeline"
    # What the stack generated is what OpenBao hands out (compared, never printed).
    assert password == credentials.load()["postgres_pipeline_password"]


def test_pipeline_token_cannot_read_outside_its_policy(openbao_env):
    import hvac

    from devstack import openbao

    token = openbao.pipeline_token_path().read_text().strip()
    client = hvac.Client(url=openbao_env["BAO_ADDR"], token=token, verify=openbao_env["BAO_CACERT"])
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.create_or_update_secret(
            path="cdc/postgres/pipeline", secret={"password": "x"}
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.list_mounted_secrets_engines()
    # The same denial, as the resolver reports it: naming the reference, not a value.
    with pytest.raises(SecretError, match="may not read it"):
        SecretResolver(openbao_env).resolve("openbao:other/thing#password")


def test_missing_field_and_secret_are_named(openbao_env):
    resolver = SecretResolver(openbao_env)
    with pytest.raises(SecretError, match="no field 'pin'"):
        resolver.resolve("openbao:cdc/postgres/pipeline#pin")
    with pytest.raises(SecretError, match="no such secret"):
        resolver.resolve("openbao:cdc/nothing/here#password")


def test_env_and_file_references(tmp_path):
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-a-file\n")
    resolver = SecretResolver({"DB_PASSWORD": "from-env"})
    assert resolver.resolve("env:DB_PASSWORD") == "from-env"
    assert resolver.resolve(f"file:{secret_file}") == "from-a-file"
    with pytest.raises(SecretError, match="environment variable not set"):
        resolver.resolve("env:NOT_SET_ANYWHERE")
    with pytest.raises(SecretError, match="unknown scheme 'ldap'"):
        resolver.resolve("ldap:cn=x")
    with pytest.raises(SecretError, match="BAO_ADDR"):
        SecretResolver({}).resolve("openbao:cdc/x#y")


def test_openbao_speaks_tls13_only(openbao_env):
    import ssl

    from devstack import openbao
    from devstack.tlsprobe import negotiated_protocol
    from tests.stack.plaintext import plaintext_http_refused

    assert negotiated_protocol(openbao.HOST, openbao.PORT) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        negotiated_protocol(openbao.HOST, openbao.PORT, maximum=ssl.TLSVersion.TLSv1_2)
    assert plaintext_http_refused(openbao.HOST, openbao.PORT)


def test_the_openbao_token_is_in_no_repr() -> None:
    """The settings are kept on the resolver (and the tokenizer's client): a repr in a log
    line or a traceback that shows locals must not carry the token."""
    from connectors.secrets import OpenBaoSettings

    settings = OpenBaoSettings.from_environment({"BAO_ADDR": "https://bao:8200",
                                                 "BAO_TOKEN": "s.SECRET-token"})
    assert settings.token == "s.SECRET-token"
    assert "SECRET" not in repr(settings) and "SECRET" not in str(settings)
