"""The masking step, against the stack's real OpenBao (hmac key from KV, tokens from transit).

Nothing here fakes OpenBao or the masker: expected digests are computed independently with the
key read straight from OpenBao, tokens are decrypted straight through transit, and round trips
are counted on the wire (an hvac session that counts HTTP requests) and in OpenBao's audit log.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid
from collections import namedtuple
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import hvac
import pytest
import requests
from cassandra.util import OrderedMap, SortedSet
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.secrets import SecretResolver
from operators.masking import (
    Basis,
    BatchAudit,
    ConfigError,
    DataClass,
    Masker,
    MaskingError,
    MaskingPolicy,
    OpenBaoTransitTokenizer,
    Strategy,
    TokenizationError,
    TokenRequest,
    load_policy,
    masked_column_types,
    sensitive_term,
)

ROOT = Path(__file__).resolve().parents[2]
TRANSIT_KEY = "cdc-tokenization"
HMAC_REF = "openbao:cdc/masking#hmac_key"
HEX64 = set("0123456789abcdef")


def policy_mapping() -> dict:
    """A small valid `masking` section; tests change one thing and expect one error."""
    return {
        "hmac": {"key": HMAC_REF},
        "tokenize": {"mount": "transit", "key": TRANSIT_KEY, "key_version": 1},
        "tables": {
            "clinic": {
                "patients": {
                    "columns": {
                        "ssn": {"class": "ssn", "strategy": "tokenize", "context": "clinic.ssn"},
                        "mrn": {"class": "medical_record_number", "strategy": "tokenize"},
                        "first_name": {"class": "first_name", "strategy": "hmac"},
                        "email": {"class": "email", "strategy": "hmac"},
                        "phones": {"class": "phone", "strategy": "hmac"},
                        "home_address": {"class": "address", "strategy": "redact"},
                        "diagnosis": {"class": "diagnosis", "strategy": "redact"},
                        "hostname_alias": {"class": "none", "reason": "a workstation's name"},
                        "lab_name": {"class": "none", "reason": "the laboratory, a company"},
                        "nickname": {
                            "class": "other_pii",
                            "strategy": "pass",
                            "reason": "already pseudonymised by the source application",
                        },
                    }
                },
                "visits": {
                    "columns": {
                        "patient_ssn": {
                            "class": "ssn", "strategy": "tokenize", "context": "clinic.ssn"
                        },
                    }
                },
            }
        },
    }


# --- fixtures -----------------------------------------------------------------------------------

class CountingSession(requests.Session):
    """A requests session that counts the HTTP requests hvac sends, by URL path."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def send(self, request, **kwargs):
        self.paths.append(request.path_url)
        return super().send(request, **kwargs)


def pipeline_client(env: dict[str, str], session: requests.Session | None = None) -> hvac.Client:
    token = Path(env["BAO_TOKEN_FILE"]).read_text().strip()
    if session is not None:
        session.verify = env["BAO_CACERT"]  # hvac applies `verify` only to sessions it creates
    return hvac.Client(url=env["BAO_ADDR"], token=token, verify=env["BAO_CACERT"],
                       session=session)


@pytest.fixture(scope="module")
def policy() -> MaskingPolicy:
    return MaskingPolicy.from_mapping(policy_mapping())


@pytest.fixture(scope="module")
def openbao_hmac_key(openbao_env) -> bytes:
    """The masking key read straight from OpenBao's KV (not through the code under test)."""
    secret = pipeline_client(openbao_env).secrets.kv.v2.read_secret_version(
        path="cdc/masking", mount_point="secret", raise_on_deleted_version=True
    )
    return secret["data"]["data"]["hmac_key"].encode("utf-8")


@pytest.fixture(scope="module")
def masker(openbao_env, policy) -> Masker:
    return Masker(policy, SecretResolver(openbao_env), OpenBaoTransitTokenizer(policy.tokenize,
                  environ=openbao_env))


def reference_hmac(key: bytes, value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def reidentify_client(env: dict[str, str]) -> hvac.Client:
    """An auditor's client: the only token allowed transit decrypt (the pipeline's is not)."""
    from devstack.openbao import reidentify_token_path

    token = reidentify_token_path().read_text().strip()
    return hvac.Client(url=env["BAO_ADDR"], token=token, verify=env["BAO_CACERT"])


def transit_decrypt(env: dict[str, str], context: str, token: str) -> bytes:
    """Decrypt as an auditor through transit directly (hvac, no masking code)."""
    result = reidentify_client(env).secrets.transit.decrypt_data(
        name=TRANSIT_KEY, ciphertext=token,
        context=base64.b64encode(context.encode()).decode(),
    )
    return base64.b64decode(result["data"]["plaintext"])


# --- policy validation --------------------------------------------------------------------------

def test_an_unknown_strategy_is_named_with_its_full_key_path():
    mapping = policy_mapping()
    mapping["tables"]["clinic"]["patients"]["columns"]["ssn"]["strategy"] = "hash"
    with pytest.raises(ConfigError) as caught:
        MaskingPolicy.from_mapping(mapping)
    assert str(caught.value) == (
        "masking.tables.clinic.patients.columns.ssn.strategy: "
        "'hash' is not one of hmac, tokenize, redact, pass"
    )
    assert caught.value.path == "masking.tables.clinic.patients.columns.ssn.strategy"


def _column(mapping: dict, name: str) -> dict:
    return mapping["tables"]["clinic"]["patients"]["columns"].setdefault(name, {})


COLUMNS = "masking.tables.clinic.patients.columns"


@pytest.mark.parametrize(("change", "path", "problem"), [
    (lambda m: _column(m, "ssn").update(stratgy="hmac"),
     f"{COLUMNS}.ssn.stratgy", "unknown key; expected one of class, strategy, reason, context"),
    (lambda m: _column(m, "ssn").pop("class"), f"{COLUMNS}.ssn.class", "missing"),
    (lambda m: _column(m, "ssn").update({"class": "pii"}),
     f"{COLUMNS}.ssn.class", "'pii' is not one of"),
    (lambda m: _column(m, "email").pop("strategy"),
     f"{COLUMNS}.email.strategy", "missing for class email"),
    (lambda m: _column(m, "hostname_alias").pop("reason"),
     f"{COLUMNS}.hostname_alias.reason", "needs a written reason"),
    (lambda m: _column(m, "nickname").update(reason="  N/A "),
     f"{COLUMNS}.nickname.reason", "needs a written reason"),
    (lambda m: _column(m, "nickname").update(reason=7),
     f"{COLUMNS}.nickname.reason", "expected a string, found a number"),
    (lambda m: _column(m, "hostname_alias").update(strategy="hmac"),
     f"{COLUMNS}.hostname_alias.strategy", "class none passes through"),
    (lambda m: _column(m, "email").update(context="x"),
     f"{COLUMNS}.email.context", "only for strategy tokenize"),
    (lambda m: m["tables"]["clinic"].update(patients=[]),
     "masking.tables.clinic.patients", "expected an object with 'columns', found a list"),
    (lambda m: m.update(tables="clinic"), "masking.tables", "found a string"),
    (lambda m: m.pop("hmac"), "masking.hmac", "missing: hmac is used"),
    (lambda m: m.pop("tokenize"), "masking.tokenize", "missing: a column uses strategy tokenize"),
    (lambda m: m["tokenize"].update(key_version=0),
     "masking.tokenize.key_version", "expected a positive integer, found 0"),
    (lambda m: m["hmac"].update(key="openbao:cdc/masking"),
     "masking.hmac.key", "must be a secret reference"),
    (lambda m: m.update(unclassified_strategy="pass"),
     "masking.unclassified_strategy", "'pass' is not one of hmac, tokenize, redact"),
    (lambda m: m.update(version=2), "masking.version", "unsupported"),
    (lambda m: m.update(unlisted="strict"), "masking.unlisted", "must be one of detect, mask"),
    (lambda m: m.update(colums={}), "masking.colums", "unknown key"),
])
def test_policy_errors_name_the_key_path(change, path, problem):
    mapping = policy_mapping()
    change(mapping)
    with pytest.raises(ConfigError) as caught:
        MaskingPolicy.from_mapping(mapping)
    assert caught.value.path == path
    assert problem in caught.value.problem


def test_a_literal_hmac_key_is_refused_without_being_echoed():
    mapping = policy_mapping()
    literal = "s3cr3t-hmac-key-pasted-into-config-0123456789"
    mapping["hmac"]["key"] = literal
    with pytest.raises(ConfigError, match="must be a secret reference") as caught:
        MaskingPolicy.from_mapping(mapping)
    assert literal not in str(caught.value)


def test_duplicate_keys_in_a_policy_file_are_an_error(tmp_path):
    file = tmp_path / "masking.json"
    file.write_text('{"masking": {"hmac": {"key": "env:K"}, "tables": {"clinic": {"patients": '
                    '{"columns": {"ssn": {"class": "ssn", "strategy": "hmac"}, '
                    '"ssn": {"class": "none", "reason": "quietly unmasked"}}}}}}}')
    with pytest.raises(ConfigError) as caught:
        load_policy(file)
    assert str(caught.value) == f"{COLUMNS}.ssn: defined more than once"
    file.write_text('{"masking": {"tables": }}')
    with pytest.raises(ConfigError, match=r"not valid JSON: .* line 1 column 24"):
        load_policy(file)
    # A section beside "masking" instead of in it (its tables would go unused): refused.
    file.write_text('{"masking": {"hmac": {"key": "env:K"}}, "tables": {}, "_comment": "ok"}')
    with pytest.raises(ConfigError) as caught:
        load_policy(file)
    assert str(caught.value).startswith(f"{file}: tables: is not a known key")


def test_the_example_policy_file_is_valid():
    policy = load_policy(ROOT / "config" / "masking.example.json")
    ssn = policy.rule_for("clinic", "patients", "ssn")
    assert (ssn.strategy, ssn.data_class, ssn.context) == (
        Strategy.TOKENIZE, DataClass.SSN, "clinic.ssn")
    assert policy.rule_for("clinic", "visits", "patient_ssn").context == "clinic.ssn"
    assert policy.rule_for("clinic", "patients", "mrn").context == "clinic.patients.mrn"
    assert policy.rule_for("clinic", "lab_results", "lab_name").strategy is Strategy.PASS
    assert policy.hmac is not None and policy.hmac.key == HMAC_REF
    assert policy.tokenize is not None and policy.tokenize.key_version == 1


# --- fail-closed classification -----------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "first_name", "FirstName", "LASTNAME", "patient_name", "user_name", "email", "e_mail",
    "EmailAddress", "mobile_phone", "phoneNumber", "ssn", "social_security_number",
    "home_address", "address2", "ip_address", "dob", "patientDOB", "date_of_birth", "birthDate",
    "diagnosis_code", "diagnoses", "prescription", "prescriberId", "medical_record_number",
    "medications", "lab_result", "labResults", "mrn", "zip_code",
])
def test_names_that_look_sensitive(name):
    assert sensitive_term(name) is not None


@pytest.mark.parametrize("name", [
    "filename", "hostname", "file_name", "host_name", "FileName", "table_name", "company_name",
    "namespace", "label", "labels", "rename_count", "created_at", "status", "amount", "id",
    "visit_id", "updated_by_service", "medium",
])
def test_names_that_do_not(name):
    assert sensitive_term(name) is None


def test_unlisted_sensitive_columns_are_masked_fail_closed(masker, openbao_hmac_key, caplog):
    audits: list[BatchAudit] = []
    masker = Masker(masker.policy, SecretResolver(), audit=audits.append,
                    tokenizer=OpenBaoTransitTokenizer(masker.policy.tokenize))
    row = {"id": 7, "contact_email": "ana@example.org", "patientDOB": "1980-02-03",
           "hostname": "ws-12", "lab_name": "Acme Labs", "status": "active"}
    with caplog.at_level("WARNING"):
        (out,) = masker.mask_rows("clinic", "patients", [row])

    assert out["contact_email"] == reference_hmac(openbao_hmac_key, "ana@example.org")
    assert out["patientDOB"] == reference_hmac(openbao_hmac_key, "1980-02-03")
    # Not sensitive-looking, or exempted with a reason: unchanged.
    assert (out["id"], out["hostname"], out["lab_name"], out["status"]) == (
        7, "ws-12", "Acme Labs", "active")

    by_column = {c.column: c for c in audits[0].columns}
    assert by_column["contact_email"].basis is Basis.DETECTED
    assert by_column["contact_email"].data_class is DataClass.UNCLASSIFIED
    assert by_column["contact_email"].strategy is Strategy.HMAC
    assert by_column["lab_name"].basis is Basis.POLICY
    assert by_column["hostname"].basis is Basis.UNLISTED
    # The log names the column and where to classify it; never a value.
    assert "clinic.patients.contact_email" in caplog.text
    assert "ana@example.org" not in caplog.text and "1980-02-03" not in caplog.text


def test_with_unlisted_mask_every_column_the_policy_does_not_list_is_masked(
        masker, openbao_hmac_key):
    """The name heuristic misses a PII column renamed to a plain name, or a UDT holding an
    e-mail address: with "unlisted": "mask", no column the policy does not list leaves in
    clear, whatever its name; listed exemptions still pass."""
    mapping = policy_mapping()
    mapping["unlisted"] = "mask"
    policy = MaskingPolicy.from_mapping(mapping)
    audits: list[BatchAudit] = []
    strict = Masker(policy, SecretResolver(), audit=audits.append,
                    tokenizer=OpenBaoTransitTokenizer(policy.tokenize))
    row = {"national_id": "123-45-6789", "notes": "call Ana", "hostname": "ws-12",
           "lab_name": "Acme Labs"}
    (out,) = strict.mask_rows("clinic", "patients", [row])
    assert out["national_id"] == reference_hmac(openbao_hmac_key, "123-45-6789")
    assert out["notes"] == reference_hmac(openbao_hmac_key, "call Ana")
    assert out["hostname"] == reference_hmac(openbao_hmac_key, "ws-12")
    assert out["lab_name"] == "Acme Labs"  # listed, class none, with its reason
    by_column = {c.column: c.basis for c in audits[0].columns}
    assert by_column["notes"] is Basis.UNLISTED_MASKED
    assert by_column["lab_name"] is Basis.POLICY
    # The default stays the name heuristic.
    (plain,) = masker.mask_rows("clinic", "patients", [{"notes": "call Ana"}])
    assert plain["notes"] == "call Ana"


def test_the_fail_closed_default_can_be_tokenize(openbao_env):
    mapping = policy_mapping()
    mapping["unclassified_strategy"] = "tokenize"
    policy = MaskingPolicy.from_mapping(mapping)
    masker = Masker(policy, SecretResolver(openbao_env),
                    OpenBaoTransitTokenizer(policy.tokenize, environ=openbao_env))
    (out,) = masker.mask_rows("clinic", "patients", [{"guardian_name": "Ana Lima"}])
    token = out["guardian_name"]
    assert token.startswith("vault:v1:")
    assert transit_decrypt(openbao_env, "clinic.patients.guardian_name", token) == b"Ana Lima"


# --- hmac ---------------------------------------------------------------------------------------

def test_hmac_matches_an_independent_computation_with_the_key_from_openbao(
        masker, openbao_hmac_key):
    rows = [{"first_name": "Zoë", "email": "zoe@example.org"},
            {"first_name": "Zoë", "email": "ZOE@example.org"}]
    first, second = masker.mask_rows("clinic", "patients", rows)
    assert first["first_name"] == reference_hmac(openbao_hmac_key, "Zoë")
    assert first["email"] == reference_hmac(openbao_hmac_key, "zoe@example.org")
    assert second["first_name"] == first["first_name"]  # deterministic
    assert second["email"] != first["email"]            # exact, no normalisation
    assert set(first["email"]) <= HEX64 and len(first["email"]) == 64


def test_hmac_depends_on_the_key():
    policy = MaskingPolicy.from_mapping({"hmac": {"key": "env:MASKING_KEY"}})
    row = [{"email": "ana@example.org"}]

    def digest(key: str) -> str:
        masker = Masker(policy, SecretResolver({"MASKING_KEY": key}))
        return masker.mask_rows("ks", "t", row)[0]["email"]

    key_a, key_b = "a" * 32, "b" * 32
    assert digest(key_a) == digest(key_a)
    assert digest(key_a) != digest(key_b)
    assert digest(key_a) == reference_hmac(key_a.encode(), "ana@example.org")


def test_a_short_hmac_key_is_refused_without_showing_it():
    policy = MaskingPolicy.from_mapping({"hmac": {"key": "env:MASKING_KEY"}})
    masker = Masker(policy, SecretResolver({"MASKING_KEY": "short-key-17bytes"}))
    with pytest.raises(MaskingError) as caught:
        masker.mask_rows("ks", "t", [{"email": "ana@example.org"}])
    assert "env:MASKING_KEY" in str(caught.value) and "32 bytes" in str(caught.value)
    assert "short-key-17bytes" not in str(caught.value)


def test_non_text_values_are_hashed_in_their_canonical_text_form(masker, openbao_hmac_key):
    when = uuid.UUID("12345678-1234-5678-1234-567812345678")
    (out,) = masker.mask_rows("clinic", "patients", [
        {"phones": 5551234, "email": when, "first_name": Decimal("1.50"),
         "mrn_hash": b"\x00\xff"}])
    assert out["phones"] == reference_hmac(openbao_hmac_key, "5551234")
    assert out["email"] == reference_hmac(openbao_hmac_key, str(when))
    assert out["first_name"] == reference_hmac(openbao_hmac_key, "1.50")
    assert out["mrn_hash"] == reference_hmac(openbao_hmac_key, b"\x00\xff")


# --- collections, tuples, UDTs, NULL ------------------------------------------------------------

Address = namedtuple("Address", ["street", "zip"])  # what the driver makes of a UDT


def test_collections_are_masked_element_wise(masker, openbao_hmac_key):
    h = lambda v: reference_hmac(openbao_hmac_key, v)  # noqa: E731
    rows = [{
        "phones": ["555-0100", "555-0101", None],
        "email": {"a@example.org", "b@example.org"},
        "first_name": {"home": "Ana", "work": "Ana L."},
    }, {  # the collection types cassandra-driver decodes sets and maps to
        "email": SortedSet(["a@example.org", "b@example.org"]),
        "first_name": OrderedMap([("home", "Ana"), ("work", "Ana L.")]),
    }]
    out, driver_types = masker.mask_rows("clinic", "patients", rows)
    assert out["phones"] == [h("555-0100"), h("555-0101"), None]
    assert out["email"] == {h("a@example.org"), h("b@example.org")}
    assert out["first_name"] == {h("home"): h("Ana"), h("work"): h("Ana L.")}
    assert driver_types == {"email": out["email"], "first_name": out["first_name"]}


def test_a_lone_surrogate_is_masked_as_its_surrogatepass_bytes_alone_or_in_a_list(
        masker, openbao_hmac_key, openbao_env):
    # Text columns take a fast path of their own (whole columns at once); it must give the
    # bytes the element-wise path gives: UTF-8 with surrogates passed through, not replaced.
    odd = "x\udcffy"
    data = odd.encode("utf-8", "surrogatepass")
    (out,) = masker.mask_rows("clinic", "patients", [
        {"first_name": odd, "phones": [odd], "mrn": odd}])
    assert out["first_name"] == reference_hmac(openbao_hmac_key, data)
    assert out["phones"] == [reference_hmac(openbao_hmac_key, data)]
    assert transit_decrypt(openbao_env, "clinic.patients.mrn", out["mrn"]) == data


def test_tokenized_collections_keep_nulls_in_place(masker, openbao_env):
    (out,) = masker.mask_rows("clinic", "patients", [
        {"mrn": ["A-1", None, "A-2", "A-1"], "ssn": "123-45-6789"}])
    first, gap, second, again = out["mrn"]
    assert gap is None and first == again and first != second
    assert [transit_decrypt(openbao_env, "clinic.patients.mrn", t) for t in (first, second)] == [
        b"A-1", b"A-2"]
    assert transit_decrypt(openbao_env, "clinic.ssn", out["ssn"]) == b"123-45-6789"


def test_tuples_and_udts_are_masked_whole_as_canonical_json(masker, openbao_hmac_key):
    (out,) = masker.mask_rows("clinic", "patients", [{
        "email": ("ana@example.org", 2, None),
        "phones": [Address("Rua A, 1", 1000), Address("Rua B", None)],
        "first_name": Address("Rua Ç", 5),
    }])
    assert out["email"] == reference_hmac(openbao_hmac_key, '["ana@example.org",2,null]')
    assert out["phones"] == [
        reference_hmac(openbao_hmac_key, '{"street":"Rua A, 1","zip":1000}'),
        reference_hmac(openbao_hmac_key, '{"street":"Rua B","zip":null}'),
    ]
    assert out["first_name"] == reference_hmac(openbao_hmac_key, '{"street":"Rua Ç","zip":5}')


def test_null_stays_null_and_redact_writes_null(masker):
    rows = [{"ssn": None, "first_name": None, "home_address": None, "nickname": None},
            {"ssn": "123-45-6789", "home_address": "Rua A, 1", "diagnosis": ["E11.9"],
             "nickname": "ana"}]
    original = copy.deepcopy(rows)
    nulls, values = masker.mask_rows("clinic", "patients", rows)
    assert nulls == {"ssn": None, "first_name": None, "home_address": None, "nickname": None}
    assert values["home_address"] is None and values["diagnosis"] is None
    assert values["nickname"] == "ana"  # pass, with its reason in the policy
    assert rows == original  # the input batch is not modified


def test_a_value_that_cannot_be_encoded_fails_the_batch_naming_the_column(masker):
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque(secret-value)"

    with pytest.raises(MaskingError) as caught:
        masker.mask_rows("clinic", "patients", [{"email": "a@b.c"}, {"email": Opaque()}])
    assert str(caught.value) == "clinic.patients.email: cannot hmac a value of type Opaque"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- tokenize -----------------------------------------------------------------------------------

def test_tokens_are_deterministic_across_instances_and_processes(openbao_env, policy):
    rows = [{"ssn": "123-45-6789", "mrn": "MRN-0042"}]

    def fresh_masker() -> Masker:  # a new client, a new masker: what a restart gives
        return Masker(policy, SecretResolver(openbao_env),
                      OpenBaoTransitTokenizer(policy.tokenize, environ=openbao_env))

    first = fresh_masker().mask_rows("clinic", "patients", rows)[0]
    second = fresh_masker().mask_rows("clinic", "patients", rows)[0]
    assert first == second

    script = (
        "import json, sys\n"
        "from connectors.secrets import SecretResolver\n"
        "from operators.masking import Masker, MaskingPolicy, OpenBaoTransitTokenizer\n"
        "policy = MaskingPolicy.from_mapping(json.loads(sys.argv[1]))\n"
        "masker = Masker(policy, SecretResolver(), OpenBaoTransitTokenizer(policy.tokenize))\n"
        "print(json.dumps(masker.mask_rows('clinic', 'patients', json.loads(sys.argv[2]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(policy_mapping()), json.dumps(rows)],
        cwd=ROOT, env={**os.environ, **openbao_env}, capture_output=True, text=True,
        check=True, timeout=60,
    )
    assert json.loads(done.stdout) == [first]


def test_the_pipeline_token_cannot_reverse_a_token(masker, openbao_env):
    token = masker.mask_rows("clinic", "patients", [{"mrn": "MRN-0001"}])[0]["mrn"]
    with pytest.raises(hvac.exceptions.Forbidden):
        pipeline_client(openbao_env).secrets.transit.decrypt_data(
            name=TRANSIT_KEY, ciphertext=token,
            context=base64.b64encode(b"clinic.patients.mrn").decode())
    assert transit_decrypt(openbao_env, "clinic.patients.mrn", token) == b"MRN-0001"


def test_tokens_differ_per_context_and_decrypt_through_transit(masker, openbao_env):
    patients, visits = masker.mask_rows("clinic", "patients", [
        {"ssn": "123-45-6789", "mrn": "123-45-6789"}]), masker.mask_rows("clinic", "visits", [
        {"patient_ssn": "123-45-6789"}])
    ssn, mrn = patients[0]["ssn"], patients[0]["mrn"]
    assert ssn.startswith("vault:v1:") and mrn.startswith("vault:v1:")
    assert ssn != mrn  # equal values, different column contexts: unrelated tokens
    assert visits[0]["patient_ssn"] == ssn  # a shared context joins

    assert transit_decrypt(openbao_env, "clinic.ssn", ssn) == b"123-45-6789"
    assert transit_decrypt(openbao_env, "clinic.patients.mrn", mrn) == b"123-45-6789"
    with pytest.raises(hvac.exceptions.InvalidRequest):  # the wrong context does not open it
        transit_decrypt(openbao_env, "clinic.patients.mrn", ssn)
    # The re-identification API does the same through the tokenizer, given an auditor's token.
    from devstack.openbao import reidentify_token_path

    auditor = {**openbao_env, "BAO_TOKEN_FILE": str(reidentify_token_path())}
    tokenizer = OpenBaoTransitTokenizer(masker.policy.tokenize, environ=auditor)
    assert tokenizer.detokenize([("clinic.ssn", ssn), ("clinic.patients.mrn", mrn)]) == [
        b"123-45-6789", b"123-45-6789"]


def _audit_log() -> Path:
    from devstack import openbao

    return openbao.folder() / "audit.log"


def _encrypt_requests_since(offset: int) -> list[dict]:
    with _audit_log().open("rb") as log:  # read-only
        log.seek(offset)
        entries = [json.loads(line) for line in log.read().splitlines() if line.strip()]
    return [e for e in entries if e.get("type") == "request"
            and e["request"].get("path") == f"transit/encrypt/{TRANSIT_KEY}"]


def test_a_batch_costs_one_transit_round_trip(openbao_env, policy):
    session = CountingSession()
    tokenizer = OpenBaoTransitTokenizer(policy.tokenize,
                                        client=pipeline_client(openbao_env, session))
    masker = Masker(policy, SecretResolver(openbao_env), tokenizer)
    rows = [{"ssn": f"000-00-{i % 23:04d}", "mrn": f"MRN-{i}", "email": f"p{i}@example.org"}
            for i in range(150)]
    distinct = 23 + 150  # ssn values repeat and are sent once each

    audit_offset = _audit_log().stat().st_size
    out = masker.mask_rows("clinic", "patients", rows)

    assert session.paths == [f"/v1/transit/encrypt/{TRANSIT_KEY}"]
    assert len({r["mrn"] for r in out}) == 150 and len({r["ssn"] for r in out}) == 23
    # OpenBao's own record: one encrypt request carrying the whole batch.
    ours = [e for e in _encrypt_requests_since(audit_offset)
            if len(e["request"].get("data", {}).get("batch_input", [])) == distinct]
    assert len(ours) == 1


def test_max_batch_items_splits_a_large_batch(openbao_env):
    mapping = policy_mapping()
    mapping["tokenize"]["max_batch_items"] = 40
    policy = MaskingPolicy.from_mapping(mapping)
    session = CountingSession()
    tokenizer = OpenBaoTransitTokenizer(policy.tokenize,
                                        client=pipeline_client(openbao_env, session))
    rows = [{"mrn": f"MRN-{i}"} for i in range(100)]
    out = Masker(policy, SecretResolver(openbao_env), tokenizer).mask_rows(
        "clinic", "patients", rows)
    assert len(session.paths) == 3  # ceil(100 / 40)
    assert tokenizer.tokenize([TokenRequest("clinic.patients.mrn", b"MRN-99")]) == [
        out[99]["mrn"]]


def test_the_default_batch_size_fits_openbaos_request_limit(openbao_env, policy):
    """OpenBao refuses request JSON with over 1000 strings (max_request_json_strings): 199
    pinned items is the most one request can carry; a bigger batch is split, not refused."""
    assert policy.tokenize.max_batch_items == 199
    session = CountingSession()
    tokenizer = OpenBaoTransitTokenizer(policy.tokenize,
                                        client=pipeline_client(openbao_env, session))
    tokens = tokenizer.tokenize([TokenRequest("c", f"v{i}".encode()) for i in range(1000)])
    assert len(set(tokens)) == 1000 and len(session.paths) == 6  # ceil(1000 / 199)

    oversized = OpenBaoTransitTokenizer(replace(policy.tokenize, max_batch_items=200),
                                        client=pipeline_client(openbao_env))
    with pytest.raises(TokenizationError, match="max_request_json_strings"):
        oversized.tokenize([TokenRequest("c", f"v{i}".encode()) for i in range(200)])


def test_a_tokenization_failure_names_the_columns_never_values_or_tokens(openbao_env):
    mapping = policy_mapping()
    mapping["tokenize"]["key_version"] = 99  # the key has no version 99
    policy = MaskingPolicy.from_mapping(mapping)
    masker = Masker(policy, SecretResolver(openbao_env),
                    OpenBaoTransitTokenizer(policy.tokenize, environ=openbao_env))
    with pytest.raises(MaskingError) as caught:
        masker.mask_rows("clinic", "patients", [{"ssn": "123-45-6789", "mrn": "MRN-7"}])
    message = str(caught.value)
    assert message.startswith("clinic.patients: tokenizing mrn, ssn: transit encrypt with "
                              "transit/cdc-tokenization v99 failed")
    assert "higher than the latest key version" in message
    assert "123-45-6789" not in message and "MRN-7" not in message and "vault:" not in message
    assert caught.value.__cause__ is None


def test_a_token_without_transit_rights_is_reported_plainly(openbao_env, policy):
    client = hvac.Client(url=openbao_env["BAO_ADDR"], token="not-a-token",  # noqa: S106
                         verify=openbao_env["BAO_CACERT"])
    tokenizer = OpenBaoTransitTokenizer(policy.tokenize, client=client)
    with pytest.raises(TokenizationError, match="permission denied|not valid"):
        tokenizer.tokenize([TokenRequest("c", b"x")])


def test_a_policy_that_tokenizes_needs_a_tokenizer(policy):
    with pytest.raises(ValueError, match="pass a Tokenizer"):
        Masker(policy, SecretResolver())


# --- audit --------------------------------------------------------------------------------------

def test_the_audit_hook_gets_counts_per_column_and_strategy_never_values(openbao_env, policy):
    audits: list[BatchAudit] = []
    masker = Masker(policy, SecretResolver(openbao_env),
                    OpenBaoTransitTokenizer(policy.tokenize, environ=openbao_env),
                    audit=audits.append)
    masker.mask_rows("clinic", "patients", [
        {"ssn": "1", "email": "a@x", "status": "new"},
        {"ssn": None, "email": "b@x", "status": "old"},
        {"ssn": "3", "email": None},
    ])
    assert masker.mask_rows("clinic", "patients", []) == []
    (audit,) = audits
    assert (audit.keyspace, audit.table, audit.rows) == ("clinic", "patients", 3)
    summary = {c.column: (c.strategy, c.basis, c.values, c.nulls) for c in audit.columns}
    assert summary == {
        "email": (Strategy.HMAC, Basis.POLICY, 2, 1),
        "ssn": (Strategy.TOKENIZE, Basis.POLICY, 2, 1),
        "status": (Strategy.PASS, Basis.UNLISTED, 2, 0),
    }
    assert "a@x" not in repr(audit)


# --- destination types --------------------------------------------------------------------------

def test_masked_column_types_for_the_sinks(policy):
    from connectors.cassandra.values import UdtDefinition, parse_cql_type

    udts = {"address": UdtDefinition("clinic", "address", ("street", "zip"), ("text", "int"))}
    types = {name: parse_cql_type(cql, "clinic", udts) for name, cql in {
        "id": "uuid", "ssn": "text", "mrn": "bigint", "first_name": "varchar",
        "email": "frozen<address>", "phones": "map<text, int>", "contact_email": "list<date>",
        "guardian_names": "set<text>", "home_address": "frozen<address>", "status": "int",
        "patient_dob": "timestamp",
    }.items()}
    assert masked_column_types(policy, "clinic", "patients", types, primary_key=("id", "ssn")) == {
        "mrn": "text",                     # tokenize
        "email": "text",                   # a UDT, masked whole
        "phones": "map<text, text>",       # keys and values masked
        "contact_email": "list<text>",     # fail-closed hmac, element-wise
        "patient_dob": "text",             # fail-closed hmac
    }
    with pytest.raises(ConfigError) as caught:
        masked_column_types(policy, "clinic", "patients", types, primary_key=("home_address",))
    assert caught.value.path == f"{COLUMNS}.home_address.strategy"
    assert "primary-key column clinic.patients.home_address" in caught.value.problem


# --- property -----------------------------------------------------------------------------------

scalars = st.one_of(
    st.text(min_size=1), st.binary(min_size=1), st.integers(), st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False), st.dates(),
)
column_values = st.one_of(
    scalars,
    st.lists(st.text(min_size=1), min_size=1, max_size=5),
    st.sets(st.text(min_size=1), min_size=1, max_size=5),
    st.dictionaries(st.text(min_size=1), st.text(min_size=1), min_size=1, max_size=5),
    st.tuples(st.text(), st.integers()),
)


@settings(max_examples=60, deadline=None)
@given(value=column_values,
       column=st.sampled_from(["ssn", "first_name", "home_address", "contact_email"]))
def test_no_masked_output_equals_its_input(masker, value, column):
    (out,) = masker.mask_rows("clinic", "patients", [{column: value}])
    masked = out[column]
    assert masked != value
    if masked is None:  # redact
        return
    if isinstance(value, list | set | dict):  # element-wise: no element survives either
        inputs = set(value) | set(value.values()) if isinstance(value, dict) else set(value)
        outputs = set(masked) | set(masked.values()) if isinstance(masked, dict) else set(masked)
        assert not inputs & outputs
        assert len(masked) == len(value)
