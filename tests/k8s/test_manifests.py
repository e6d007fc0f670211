"""The Kubernetes manifests validate against the API schemas and agree with the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from dataflows.config import parse

MANIFEST = Path(__file__).resolve().parents[2] / "k8s" / "pipeline.yaml"


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def test_every_resource_validates_strictly(resources):
    for resource in resources.values():
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_the_embedded_configuration_is_a_valid_pipeline_configuration(resources, tmp_path):
    config = resources["ConfigMap/cassandra-cdc-config"]["data"]["pipeline.json"]
    settings = parse(json.loads(config))
    assert all(d.password.startswith("openbao:") for d in settings.destinations)
    # Every file the configuration names from the ConfigMap is mounted where it says, and
    # the masking policy there is a valid one.
    from operators.masking.policy import load_policy

    (container,) = resources["StatefulSet/cassandra-cdc"]["spec"]["template"]["spec"][
        "containers"]
    mounted = {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]
               if m["name"] == "config"}
    data = resources["ConfigMap/cassandra-cdc-config"]["data"]
    key = mounted[str(settings.masking_policy)]
    (tmp_path / "masking.json").write_text(data[key])
    assert load_policy(tmp_path / "masking.json").tokenize is not None


def test_addresses_name_every_replica_and_the_pods_run_unprivileged(resources):
    stateful = resources["StatefulSet/cassandra-cdc"]["spec"]
    # The addresses resolve before the pods are ready (they are not until the cluster forms).
    service = resources["Service/cassandra-cdc"]["spec"]
    assert stateful["serviceName"] == "cassandra-cdc"
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    pod = stateful["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "pipeline")
    env = {e["name"]: e.get("value") for e in container["env"]}
    addresses = env["BYTEWAX_ADDRESSES"].split(";")
    assert addresses == [f"cassandra-cdc-{i}.cassandra-cdc:9999"
                         for i in range(stateful["replicas"])]
    assert stateful["podManagementPolicy"] == "Parallel"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert not any("PASSWORD" in name or "TOKEN=" in (value or "") for name, value in env.items())


def test_only_the_pipelines_pods_reach_the_workers_exchange(resources):
    """Bytewax's exchange (port 9999) is plaintext and carries change data before masking:
    the NetworkPolicy admits the pipeline's own pods to it, and nothing else; metrics and
    health stay open. Every port the container opens is covered by a rule."""
    policy = resources["NetworkPolicy/cassandra-cdc-workers"]["spec"]
    pod_labels = resources["StatefulSet/cassandra-cdc"]["spec"]["template"]["metadata"]["labels"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    by_port = {port["port"]: rule for rule in policy["ingress"] for port in rule["ports"]}
    exchange = by_port[9999]
    assert [peer["podSelector"]["matchLabels"] for peer in exchange["from"]] == [
        policy["podSelector"]["matchLabels"]]
    assert "from" not in by_port[3030] and "from" not in by_port[8080]
    container = next(c for c in resources["StatefulSet/cassandra-cdc"]["spec"]["template"][
        "spec"]["containers"] if c["name"] == "pipeline")
    assert {p["containerPort"] for p in container["ports"]} == set(by_port)


def test_every_path_the_pipeline_writes_is_on_a_writable_volume(resources):
    """The container's root file system is read-only: the dead letters, the spools, the audit
    trail and the recovery store must each sit under a volume mounted writable, or the first
    write stops the flow."""
    config = json.loads(resources["ConfigMap/cassandra-cdc-config"]["data"]["pipeline.json"])
    settings = parse(config)
    (container,) = [c for c in resources["StatefulSet/cassandra-cdc"]["spec"]["template"][
        "spec"]["containers"] if c["name"] == "pipeline"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [Path(m["mountPath"]) for m in container["volumeMounts"]
                if not m.get("readOnly") and "subPath" not in m]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for path in (settings.dead_letter_dir, settings.spool_dir, settings.audit_dir,
                 Path(env["BYTEWAX_RECOVERY_DIRECTORY"])):
        assert any(path == mount or mount in path.parents for mount in writable), path
