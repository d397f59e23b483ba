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
from prometheus_client.metrics import MetricWrapperBase

from tests.wheel_build import builder_sources
from worker.cli.options import from_args
from worker.observability.metrics import BulkHistogram, Metrics

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


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    (obj,) = [
        o
        for o in k8s_objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    return obj


def probe_port_ok(probe: dict[str, Any], container: dict[str, Any]) -> bool:
    port = probe["httpGet"]["port"]
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    return port == PORT or names.get(port) == PORT


# --- Kubernetes -----------------------------------------------------------------------------


def test_kustomization_resources_all_parse() -> None:
    kinds = {o["kind"] for o in k8s_objects()}
    assert kinds >= {
        "StatefulSet",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "PodMonitor",
    }
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert [i["name"] for i in kustomization["images"]] == [IMAGE]


def test_statefulset_image_port_probes_and_non_root() -> None:
    dep = by_kind("StatefulSet")
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
    # selector must match the pod labels, or the StatefulSet is rejected
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_statefulset_config_and_sasl_come_from_configmap_and_secret() -> None:
    container = by_kind("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
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
    labels = by_kind("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    svc, pdb = by_kind("Service", "charge-capture"), by_kind("PodDisruptionBudget")
    mon = by_kind("PodMonitor")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert mon["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["port"] == PORT
    (endpoint,) = mon["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    # job="charge-capture" is what the alert rules select on
    assert labels[mon["spec"]["jobLabel"]] == "charge-capture"


def test_each_pod_gets_its_pod_name_as_a_stable_distinct_instance_id() -> None:
    sts = by_kind("StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["CHARGE_CAPTURE_INSTANCE_ID"]["valueFrom"]["fieldRef"]
    assert ref["fieldPath"] == "metadata.name"  # charge-capture-0, -1, ...: per pod, stable
    # one shared value would make every pod fence the others
    assert "CHARGE_CAPTURE_INSTANCE_ID" not in by_kind("ConfigMap")["data"]
    governing = by_kind("Service", sts["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"  # headless, as a StatefulSet needs
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert governing["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["replicas"] > 1 and sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_an_init_container_creates_the_topics_with_the_workers_settings() -> None:
    pod = by_kind("StatefulSet")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (worker,) = pod["containers"]
    assert init["args"] == ["topics"] and init["image"] == worker["image"]
    assert init["envFrom"] == worker["envFrom"]
    sasl = [e for e in worker["env"] if e["name"].startswith("CHARGE_CAPTURE_SASL_")]
    assert sasl and all(e in init["env"] for e in sasl)
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    settings = by_kind("ConfigMap")["data"]
    # the brokers' default replication factor, which a production cluster sets (often 3)
    assert settings["CHARGE_CAPTURE_REPLICATION_FACTOR"] == "-1"


def test_topics_reads_the_configmap_like_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `charge-capture topics` makes of the ConfigMap in the init container."""
    from worker.cli import build_parser

    settings = by_kind("ConfigMap")["data"]
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    config = from_args(build_parser().parse_args(["topics"]))
    assert config.replication_factor == -1
    assert config.partitions == int(settings["CHARGE_CAPTURE_PARTITIONS"])
    assert config.bootstrap_servers == settings["CHARGE_CAPTURE_BOOTSTRAP_SERVERS"]
    assert config.security.security_protocol == settings["CHARGE_CAPTURE_SECURITY_PROTOCOL"]


KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not installed")
RULE_PACKS = DEPLOY / "kubernetes" / "overlays" / "rule-packs"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


@needs_kubectl
def test_base_renders_with_kustomize() -> None:
    kinds = sorted(o["kind"] for o in kustomize(K8S))
    assert kinds == sorted(o["kind"] for o in k8s_objects())


@needs_kubectl
def test_rule_packs_overlay_mounts_a_configmap_of_valid_packs(tmp_path: Path) -> None:
    from rules.pack import DEFAULT_PACKS_DIR, load_packs

    objects = kustomize(RULE_PACKS)
    (packs,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("charge-capture-rules")
    ]
    for name, text in packs["data"].items():
        (tmp_path / name).write_text(text)
    assert load_packs(tmp_path).packs  # what the pods will load parses as rule packs
    # the example starts from the built-in pack
    assert packs["data"]["cpt97012.toml"] == (DEFAULT_PACKS_DIR / "cpt97012.toml").read_text()
    (sts,) = [o for o in objects if o["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (worker,) = pod["containers"]
    (mount,) = [
        m
        for m in worker["volumeMounts"]
        if m["name"] in volumes and "configMap" in volumes[m["name"]]
    ]
    assert volumes[mount["name"]]["configMap"]["name"] == packs["metadata"]["name"]  # hashed
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["CHARGE_CAPTURE_RULES_DIR"] == mount["mountPath"] and mount["readOnly"] is True
    assert env["CHARGE_CAPTURE_INSTANCE_ID"] is None  # the base's downward-API entry stays


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


def test_deploy_readme_says_what_compose_down_keeps() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    readme = " ".join((DEPLOY / "README.md").read_text().split())
    named = set(compose.get("volumes") or {})
    assert named, "the compose file names no volumes"
    for volume in named:
        assert f"`{volume}`" in readme, volume  # each named volume is said to survive `down`
    assert "docker compose down -v" in readme
    assert not any("volumes" in svc for name, svc in compose["services"].items() if name == "kafka")
    assert "Kafka keeps its data inside its container" in readme


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
    for src in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "rules/", "worker/"):
        assert re.search(rf"^COPY .*\b{re.escape(src)}", text, re.M), src
    assert re.search(r"^COPY schemas/ schemas/", text, re.M)
    builder = text[: text.index("\nFROM ", text.index("AS builder"))]
    assert "ARG CHARGE_CAPTURE_COMPILE=1" in builder  # the image runs the compiled build


def test_dockerignore_sends_what_the_builder_copies() -> None:
    """Only what the Dockerfile copies is sent, and everything it copies is (a COPY of a path
    the ignore file leaves out fails the build)."""
    kept = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {source.rstrip("/") for source in builder_sources()}
    assert kept == copied


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


def test_the_dlq_runbook_promises_no_command_that_does_not_exist() -> None:
    from worker.cli import build_parser

    readme = " ".join((DEPLOY / "README.md").read_text().split())
    runbook = readme[readme.index("### ChargeCaptureDLQRateHigh") :].split("### ", 2)[1]
    verbs = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert "redrive" not in verbs and "re-drive" not in verbs
    assert "re-drive the DLQ records" not in runbook
    assert "There is no re-drive command" in runbook
    for verb in re.findall(r"`charge-capture (\w+)", runbook):
        assert verb in verbs, verb


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


def test_docs_metrics_lists_every_metric_with_its_type_and_labels() -> None:
    """docs/metrics.md has a row per registered metric, naming its type and label names, and
    no row for a metric that does not exist."""
    rows = {}
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`charge_capture_"):
            rows[cells[0].strip("`")] = cells
    registered = set()
    metrics = [m for m in vars(Metrics()).values() if isinstance(m, MetricWrapperBase)]
    for metric in metrics:
        # prometheus_client keeps a metric's name, type and label names on the wrapper only.
        kind, labels = metric._type, set(metric._labelnames)
        if kind == "info":  # an info's labels are its keys, set once
            labels = {k for f in metric.collect() for sample in f.samples for k in sample.labels}
        name = metric._name + {"counter": "_total", "info": "_info"}.get(kind, "")
        registered.add(name)
        assert name in rows, f"{name} is not in docs/metrics.md"
        assert rows[name][1].startswith("gauge" if kind == "info" else kind), (name, rows[name])
        documented = set(re.findall(r"`(\w+)`", rows[name][2]))
        assert documented == labels, (name, documented, labels)
    # The metrics served by collectors of our own (no labels).
    for collector in vars(Metrics()).values():
        if isinstance(collector, BulkHistogram):
            registered.add(collector.name)
            assert rows[collector.name][1].startswith("histogram"), rows[collector.name]
            assert not re.findall(r"`(\w+)`", rows[collector.name][2])
    assert set(rows) == registered, set(rows) - registered


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
