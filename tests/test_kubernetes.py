"""The Kubernetes manifests, validated against the API's own schemas (kubernetes-validate)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from monitor.config import ConfigError, parse_config
from monitor.passwords import hash_password
from monitor.shards import parse_shard
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"


def resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return docs


def test_every_file_in_the_folder_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("doc", resources(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_resource_is_valid_against_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any error


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in resources() if d["kind"] == kind]


def test_the_statefulset_runs_one_shard_per_pod_hardened_and_probed() -> None:
    (sts,) = by_kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    shard = args[args.index("--shard") + 1]
    assert parse_shard(shard, f"vlm-monitor-{sts['spec']['replicas'] - 1}").count == sts["spec"]["replicas"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # An overloaded pod answers in up to ~0.75 s; the default 1 s would restart a working one.
    assert all(container[p]["timeoutSeconds"] >= 5 for p in ("livenessProbe", "readinessProbe"))
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (configmap,) = by_kind("ConfigMap")
    env = {"CAM_PASS": "x", "WEBHOOK_URL": "https://hooks.example.com/x", "WEBHOOK_SECRET": "s",
           "CONSOLE_PASSWORD_HASH": hash_password("a long password", n=2**10)}
    config = parse_config(configmap["data"]["config.yaml"], "configmap", env)
    assert config.server.users  # listening on 0.0.0.0: the console needs them
    (secret,) = by_kind("Secret")
    with pytest.raises(ConfigError, match="password_hash"):  # the placeholder does not start
        parse_config(configmap["data"]["config.yaml"], "configmap", {**env, **secret["stringData"]})
    assert str(config.state_dir) == mounts["state"]  # each replica's outbox on its own volume
    assert config.server.port == container["ports"][0]["containerPort"]
    assert {e["secretRef"]["name"] for e in container["envFrom"]} == {secret["metadata"]["name"]}


def test_the_disruption_budget_and_services_select_the_pods() -> None:
    (sts,) = by_kind("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    (pdb,) = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    assert all(s["spec"]["selector"].items() <= labels.items()
               for s in services.values() if s["metadata"]["name"].startswith("vlm-monitor"))


def test_the_config_points_at_the_vllm_service() -> None:
    (configmap,) = by_kind("ConfigMap")
    base_url = yaml.safe_load(configmap["data"]["config.yaml"])["vlm"]["base_url"]
    vllm = [s["metadata"]["name"] for s in by_kind("Service") if s["metadata"]["name"].startswith("vllm")]
    assert any(f"//{name}:8000/" in base_url for name in vllm)
