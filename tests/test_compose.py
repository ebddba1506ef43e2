"""docker-compose.yml: validated by the compose command where one exists,
and always parsed to check the services, ports, volumes and healthchecks
Driftline relies on."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates():
    command = _compose_command()
    if command is None:
        pytest.skip("no compose command (neither 'docker compose' nor 'docker-compose') on this machine")
    result = subprocess.run(command + ["-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(command + ["-f", str(COMPOSE_FILE), "config", "--services"], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == {"kafka", "topics", "monitor", "worker", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) is needed to parse docker-compose.yml")
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def test_kafka_is_the_official_image_in_kraft_mode(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert "zookeeper" not in " ".join(compose["services"]).lower()
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "29092:29092" in kafka["ports"]
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert len(env["CLUSTER_ID"]) == 22  # a base64-encoded UUID, as kafka-storage.sh wants


def test_topic_initialiser_runs_once_after_kafka_is_healthy(compose):
    topics = compose["services"]["topics"]
    assert topics["command"][:2] == ["topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["restart"] == "no"


@pytest.mark.parametrize("name, port", [("monitor", 9464), ("worker", 9465)])
def test_daemons_restart_share_the_registry_and_expose_metrics(compose, name, port):
    service = compose["services"][name]
    assert service["command"][0] == name
    assert service["command"][service["command"].index("--metrics-port") + 1] == str(port)
    assert service["restart"] == "unless-stopped"
    assert "registry:/data/registry" in service["volumes"]
    assert f"{port}:{port}" in service["ports"]
    assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    env = service["environment"]
    assert env["DRIFTLINE_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["DRIFTLINE_REGISTRY"] == "/data/registry"
    assert env["DRIFTLINE_METRICS_ADDR"] == "0.0.0.0"  # reachable from the prometheus container
    # the monitor's /health fails when one of its agents is down; the worker has /metrics
    check = "/health" if name == "monitor" else "/metrics"
    assert f"127.0.0.1:{port}{check}" in " ".join(service["healthcheck"]["test"])
    assert service.get("build") == "."


def test_prometheus_scrapes_both_daemons(compose):
    yaml = pytest.importorskip("yaml")
    prometheus = compose["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"driftline-monitor": ["monitor:9464"], "driftline-worker": ["worker:9465"]}
    assert set(compose["volumes"]) == {"kafka-data", "registry", "monitor-data", "prometheus-data", "grafana-data"}
    # the alert rules are mounted where prometheus.yml loads them
    assert "./deploy/prometheus-rules.yml:/etc/prometheus/rules/driftline.yml:ro" in prometheus["volumes"]
    assert config["rule_files"] == ["/etc/prometheus/rules/driftline.yml"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose):
    yaml = pytest.importorskip("yaml")
    grafana = compose["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")  # the official image
    assert "3000:3000" in grafana["ports"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "driftline.yml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # the provider's path is where the dashboards directory is mounted, and it holds the dashboard
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "driftline.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "driftline" and dashboard["panels"]
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}  # every query goes to the provisioned data source


def test_dockerfile_installs_driftline_and_runs_unprivileged():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install ." in text
    assert 'ENTRYPOINT ["driftline"]' in text
    assert "\nUSER driftline" in text
    for package in ("driftline", "streams", "retrain", "registry"):
        assert f"COPY {package} ./{package}" in text


@pytest.mark.parametrize("name, command", [("worker", "driftline worker --metrics-port 9465"),
                                           ("monitor", "driftline monitor --metrics-port 9464")])
def test_systemd_units_run_the_daemons(name, command):
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(ROOT / "deploy" / f"driftline-{name}.service", encoding="utf-8")
    service = unit["Service"]
    assert command in service["ExecStart"]
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert service["EnvironmentFile"] == "/etc/driftline/driftline.env"  # secrets stay out of the unit
    assert service["User"] == "driftline"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
