"""deploy/kubernetes/poolstream.yaml and poolstream-gpu.yaml: valid against the Kubernetes
OpenAPI schemas, only real flags and POOLSTREAM_* variables, and their numbers agree."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from poolstream.cli import _add_serve_args
from poolstream.env_flags import apply_env_defaults

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFEST = KUBERNETES / "poolstream.yaml"
GPU_MANIFEST = KUBERNETES / "poolstream-gpu.yaml"
SERVICE = "poolstream.v1.PoolingService"


def _validate(path: Path) -> subprocess.CompletedProcess:
    validate = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run([str(validate), "--strict", "--quiet", str(path)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("path", [MANIFEST, GPU_MANIFEST], ids=["cpu", "gpu"])
def test_manifest_matches_the_kubernetes_schemas(path):
    """kubernetes-validate: the OpenAPI schemas of a recent Kubernetes, strict (unknown fields fail)."""
    done = _validate(path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("good,bad", [("readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true"),
                                      ("containerPort: 50051", "containerPort: grpc-port")])
def test_schema_check_can_fail(tmp_path, good, bad):
    """A misspelt field (strict) or a wrong type fails the check (it reports one error per resource)."""
    path = tmp_path / "bad.yaml"
    path.write_text(MANIFEST.read_text().replace(good, bad))
    done = _validate(path)
    assert done.returncode != 0 and bad.split(":")[0 if "File" in bad else 1].strip() in done.stdout


@pytest.fixture(scope="module", params=[MANIFEST, GPU_MANIFEST], ids=["cpu", "gpu"])
def docs(request) -> dict[str, dict]:
    items = [d for d in yaml.safe_load_all(request.param.read_text()) if d]
    out = {}
    for d in items:
        assert {"apiVersion", "kind", "metadata"} <= d.keys(), d
        out[f"{d['kind']}/{d['metadata']['name']}"] = d
    return out


def _container(docs):
    pod = docs["Deployment/poolstream"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def _env(container) -> dict[str, str]:
    """The container's environment as the kubelet would set it: literal values, and a CPU
    limit through the downward API (``resourceFieldRef``, rounded up by its divisor)."""
    env = {}
    limits = container["resources"]["limits"]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "resourceFieldRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu", ref
            env[item["name"]] = str(math.ceil(_cores(limits["cpu"]) / _cores(ref.get("divisor", "1"))))
    return env


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _args(container) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    _add_serve_args(parser)
    env = _env(container)
    applied = apply_env_defaults(parser, env)
    # Every POOLSTREAM_* variable of the manifest is a real flag's (POOLSTREAM_AUTH_TOKEN is the
    # server's token variable, read by server/security.py).
    unknown = {k for k in env if k.startswith("POOLSTREAM_")} - applied.keys() - {"POOLSTREAM_AUTH_TOKEN"}
    assert not unknown, unknown
    argv = list(container["args"])
    assert argv[0] == "serve"
    return parser.parse_args(argv[1:])  # an unknown or malformed flag fails here


def test_manifest_kinds(docs):
    assert set(docs) == {
        "Deployment/poolstream",
        "Service/poolstream-headless",
        "Service/poolstream",
        "PodDisruptionBudget/poolstream",
        "PersistentVolumeClaim/poolstream-models",
        "HorizontalPodAutoscaler/poolstream",
    }


def test_num_threads_follow_the_cpu_limit(docs):
    """The engine's threads come from the container's CPU limit (downward API), never from
    the node's core count; requests equal limits for CPU (no throttled bursts)."""
    _, c = _container(docs)
    res = c["resources"]
    assert res["limits"]["cpu"] == res["requests"]["cpu"]
    [ref] = [e for e in c["env"] if e["name"] == "POOLSTREAM_NUM_THREADS"]
    assert ref["valueFrom"]["resourceFieldRef"]["containerName"] == c["name"]
    args = _args(c)
    assert args.num_threads == math.ceil(_cores(res["limits"]["cpu"])) > 0


def test_model_volume_read_only(docs):
    pod, c = _container(docs)
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True and f"PersistentVolumeClaim/{claim['claimName']}" in docs
    args = _args(c)
    # A name resolved from the HF cache on the volume (HF_HOME=/models/hf in the image), or a directory on it.
    assert args.model.startswith("/models/") or args.model.count("/") == 1


def test_topology_spread_over_nodes_and_zones(docs):
    pod, _ = _container(docs)
    labels = docs["Deployment/poolstream"]["spec"]["template"]["metadata"]["labels"]
    keys = set()
    for tsc in pod["topologySpreadConstraints"]:
        assert tsc["maxSkew"] == 1 and tsc["labelSelector"]["matchLabels"].items() <= labels.items()
        keys.add(tsc["topologyKey"])
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_hpa_scales_the_deployment_on_a_real_metric(docs):
    """The HPA targets the Deployment, which leaves the replica count to it, and scales on
    the engine's queue gauge (a metric the server exports) and, on CPU, on CPU use."""
    from poolstream.server.metrics_collectors import ENGINE_GAUGES

    hpa = docs["HorizontalPodAutoscaler/poolstream"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "poolstream"}
    assert "replicas" not in docs["Deployment/poolstream"]["spec"]
    pdb = docs["PodDisruptionBudget/poolstream"]["spec"]
    assert 1 <= pdb["minAvailable"] < hpa["minReplicas"] <= hpa["maxReplicas"]
    pods = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert [p["metric"]["name"] for p in pods] == [ENGINE_GAUGES["queued_prompts"][0]]
    _, c = _container(docs)
    queue = _args(c).max_queued_prompts
    assert 0 < float(pods[0]["target"]["averageValue"]) < queue  # scale before pods refuse with QUEUE_FULL
    gpu = "nvidia.com/gpu" in c["resources"]["limits"]
    cpu = [m for m in hpa["metrics"] if m["type"] == "Resource"]
    assert (cpu == []) == gpu  # CPU use says little about a GPU server's load


def test_probes_are_native_grpc_on_the_health_port(docs):
    """Probes go to --health-port, served on its own threads (server/health.py)."""
    _, c = _container(docs)
    args = _args(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == args.port == 50051
    assert ports["health"] == args.health_port != args.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == ports["health"], probe
    assert c["readinessProbe"]["grpc"]["service"] == SERVICE
    assert c["livenessProbe"]["grpc"]["service"] == ""
    assert c["startupProbe"]["grpc"]["service"] == ""


def test_shutdown_timing_matches_flags(docs):
    pod, c = _container(docs)
    args = _args(c)
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    needed = pre_stop + args.drain_delay + args.grace_period
    assert pod["terminationGracePeriodSeconds"] >= needed + 1
    # Liveness must not restart a pod that is draining (health is NOT_SERVING then).
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > args.drain_delay + args.grace_period
    # Readiness reacts within one period of NOT_SERVING, well inside the drain delay.
    ready = c["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= args.drain_delay


def test_keepalive_and_connection_age_for_rebalancing(docs):
    _, c = _container(docs)
    args = _args(c)
    assert args.max_connection_age > 0
    assert args.max_connection_age_grace >= args.grace_period
    assert args.keepalive_time > 0 and args.keepalive_timeout > 0


def test_metrics_port_exposed(docs):
    pod_tpl = docs["Deployment/poolstream"]["spec"]["template"]
    _, c = _container(docs)
    args = _args(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert args.metrics_port == ports["metrics"]
    assert pod_tpl["metadata"]["annotations"]["prometheus.io/port"] == str(args.metrics_port)
    assert args.host == "0.0.0.0"  # probes and Services reach the pod IP; --metrics-host defaults to it


def test_resources_set(docs):
    _, c = _container(docs)
    res = c["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    assert res["limits"]["cpu"]


def test_gpu_variant_requests_a_gpu(docs):
    pod, c = _container(docs)
    if "cuda" not in c["image"]:
        assert "nvidia.com/gpu" not in c["resources"]["limits"] and _args(c).device != "cuda"
        return
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert _args(c).device == "cuda"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_services_select_the_pods(docs):
    labels = docs["Deployment/poolstream"]["spec"]["template"]["metadata"]["labels"]
    _, c = _container(docs)
    port_names = {p["name"] for p in c["ports"]}
    headless, cluster = docs["Service/poolstream-headless"]["spec"], docs["Service/poolstream"]["spec"]
    assert headless["clusterIP"] == "None"  # headless: DNS returns pod IPs
    assert cluster.get("type", "ClusterIP") == "ClusterIP" and cluster.get("clusterIP") != "None"
    for spec in (headless, cluster):
        assert spec["selector"].items() <= labels.items()
        for port in spec["ports"]:
            assert port["targetPort"] in port_names
    assert docs["Deployment/poolstream"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
