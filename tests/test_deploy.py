"""deploy/: manifests parse and agree with the worker (image, port, probes, metric names).

promtool (Debian's `prometheus` package, installed by `make test` via deploy/install-prometheus.sh)
checks the alert rules, runs their unit tests and parses every dashboard query.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli.options import from_args
from worker.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes" / "base"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "charge-capture.json"
IMAGE = "ghcr.io/charge-capture/charge-capture"
PORT = 9464

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (run deploy/install-prometheus.sh)"
)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for res in kustomization["resources"] for doc in load_all(K8S / res)]


def by_kind(kind: str) -> dict[str, Any]:
    (obj,) = [o for o in k8s_objects() if o["kind"] == kind]
    return obj


def probe_port_ok(probe: dict[str, Any], container: dict[str, Any]) -> bool:
    port = probe["httpGet"]["port"]
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    return port == PORT or names.get(port) == PORT


# --- Kubernetes -----------------------------------------------------------------------------


def test_kustomization_resources_all_parse() -> None:
    kinds = {o["kind"] for o in k8s_objects()}
    assert kinds >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "PodMonitor",
    }
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert [i["name"] for i in kustomization["images"]] == [IMAGE]


def test_deployment_image_port_probes_and_non_root() -> None:
    dep = by_kind("Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].split(":")[0] == IMAGE
    assert {"name": "http", "containerPort": PORT, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe_port_ok(container[probe], container), probe
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # selector must match the pod labels, or the Deployment is rejected
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_deployment_config_and_sasl_come_from_configmap_and_secret() -> None:
    container = by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    cm, secret = by_kind("ConfigMap"), by_kind("Secret")
    assert {"configMapRef": {"name": cm["metadata"]["name"]}} in container["envFrom"]
    for key in (
        "CHARGE_CAPTURE_BOOTSTRAP_SERVERS",
        "CHARGE_CAPTURE_SECURITY_PROTOCOL",
        "CHARGE_CAPTURE_SASL_MECHANISM",
    ):
        assert key in cm["data"]
    env = {e["name"]: e for e in container["env"]}
    for key in ("CHARGE_CAPTURE_SASL_USERNAME", "CHARGE_CAPTURE_SASL_PASSWORD"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]


def test_every_configmap_setting_is_a_worker_option_with_a_valid_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = by_kind("ConfigMap")["data"]
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    config = from_args(argparse.Namespace())
    for key, value in settings.items():
        name = key.removeprefix("CHARGE_CAPTURE_").lower()
        owner = config.security if hasattr(config.security, name) else config
        assert str(getattr(owner, name)) == value, key  # AttributeError: not an option


def test_service_pdb_and_podmonitor_select_the_pods() -> None:
    labels = by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    svc, pdb, mon = by_kind("Service"), by_kind("PodDisruptionBudget"), by_kind("PodMonitor")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert mon["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["port"] == PORT
    (endpoint,) = mon["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    # job="charge-capture" is what the alert rules select on
    assert labels[mon["spec"]["jobLabel"]] == "charge-capture"


# --- docker-compose, Dockerfile ---------------------------------------------------------------


def test_compose_stack() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    worker = services["worker"]
    assert worker["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert worker["image"].split(":")[0] == IMAGE
    assert worker["command"] == ["run"]
    bootstrap = worker["environment"]["CHARGE_CAPTURE_BOOTSTRAP_SERVERS"]
    assert bootstrap.split(":")[0] == "kafka"
    assert (
        f"INTERNAL://{bootstrap}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")

    def host_ports(svc: str) -> set[str]:
        return {p.rsplit(":", 1)[-1] for p in services[svc]["ports"]}

    assert host_ports("worker") == {str(PORT)}
    assert host_ports("prometheus") == {"9090"}
    assert host_ports("grafana") == {"3000"}
    assert host_ports("kafka") == {"9092"}
    # only loopback on the host
    for svc in services.values():
        for p in svc.get("ports", []):
            assert p.startswith("127.0.0.1:"), p
    # the mounted files exist and Prometheus scrapes the worker under job "charge-capture"
    for svc in ("prometheus", "grafana"):
        for vol in services[svc]["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), vol
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["charge-capture"]["static_configs"][0]["targets"] == [f"worker:{PORT}"]


def test_dockerfile_multistage_non_root_entrypoint() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2 and " AS builder" in froms[0]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    final = text[text.rindex("\nFROM ") :]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert "build-essential" not in final and "apt-get" not in final
    assert re.search(r"^USER 10001(:10001)?$", final, re.M)
    assert f"EXPOSE {PORT}" in final
    assert 'ENTRYPOINT ["charge-capture"]' in final
    assert 'CMD ["run"]' in final
    assert "CHARGE_CAPTURE_SCHEMAS_DIR=/app/schemas" in final
    for src in ("pyproject.toml", "README.md", "rules/", "worker/", "schemas/"):
        assert re.search(rf"^COPY .*\b{re.escape(src)}", text, re.M), src


def test_install_script_is_executable() -> None:
    script = DEPLOY / "install-prometheus.sh"
    assert script.stat().st_mode & 0o111
    assert "--no-install-recommends prometheus" in script.read_text()


# --- Prometheus rules and dashboard -------------------------------------------------------------


def run_promtool(*args: str, cwd: Path = PROM) -> None:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_promtool_test_rules() -> None:
    run_promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_promtool_check_compose_prometheus_config() -> None:
    run_promtool("check", "config", "prometheus.yml")


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_every_alert_has_runbook_severity_and_a_unit_test() -> None:
    readme = (DEPLOY / "README.md").read_text().lower()
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["description"]
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower()
        assert f"### {name.lower()}" in readme, f"no runbook section for {name}"
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no firing case"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no quiet case"


def dashboard_exprs() -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, val in node.items():
                if key in ("expr", "definition") and isinstance(val, str):
                    yield val
                elif key == "query" and isinstance(val, dict) and "query" in val:
                    yield val["query"]
                else:
                    yield from walk(val)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(json.loads(DASHBOARD.read_text()))


def exported_names() -> set[str]:
    """Series names the worker's registry exposes, derived from its metric families."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    return {
        fam.name + suffix for fam in Metrics().registry.collect() for suffix in suffixes[fam.type]
    }


METRIC_RE = re.compile(r"\bcharge_capture_[a-zA-Z0-9_]*")


def test_dashboard_and_alerts_only_use_exported_metrics() -> None:
    exported = exported_names()
    exprs = [*dashboard_exprs(), *(r["expr"] for r in alert_rules())]
    used = {m for e in exprs for m in METRIC_RE.findall(e)}
    assert used, "no charge_capture_ metrics found in the queries"
    assert used <= exported, f"not exported by worker.metrics.Metrics: {sorted(used - exported)}"
    # and the dashboard covers the issue's panels
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    for want in (
        "Throughput",
        "Consumer lag",
        "Event to decision latency",
        "Decisions by status",
        "Holds by rule",
        "Dead-letter rate",
        "Rebalances",
        "State restore time",
    ):
        assert want in titles


def test_no_phi_labels_in_queries_or_registry() -> None:
    phi = re.compile(r"patient|charge_id|encounter|diagnos|npi", re.I)
    for fam in Metrics().registry.collect():
        for s in fam.samples:
            assert not any(phi.search(k) for k in s.labels), (fam.name, s.labels)
    for expr in [*dashboard_exprs(), *(r["expr"] for r in alert_rules())]:
        labels = re.findall(r"by \(([^)]*)\)", expr)
        assert not any(phi.search(lbl) for lbl in labels), expr


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    # promtool has no "check query"; recording rules are parsed with the real PromQL parser.
    grafana_vars = {
        "$__rate_interval": "1m",
        "$__range": "1h",
        "$job": "charge-capture",
        "$instance": ".*",
    }
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            continue  # Grafana templating function, not PromQL
        for var, val in grafana_vars.items():
            expr = expr.replace(var, val)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path), cwd=tmp_path)
