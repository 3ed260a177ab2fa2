"""deploy/kubernetes/poolstream.yaml: parses, uses only real flags, and its numbers agree."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from poolstream.cli import _add_serve_args

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "poolstream.yaml"
SERVICE = "poolstream.v1.PoolingService"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    items = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    out = {}
    for d in items:
        assert {"apiVersion", "kind", "metadata"} <= d.keys(), d
        out[f"{d['kind']}/{d['metadata']['name']}"] = d
    return out


def _container(docs):
    pod = docs["Deployment/poolstream"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def _args(container) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    _add_serve_args(parser)
    argv = list(container["args"])
    assert argv[0] == "serve"
    return parser.parse_args(argv[1:])  # an unknown or malformed flag fails here


def test_manifest_kinds(docs):
    assert set(docs) == {
        "Deployment/poolstream",
        "Service/poolstream-headless",
        "Service/poolstream",
        "PodDisruptionBudget/poolstream",
    }


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
