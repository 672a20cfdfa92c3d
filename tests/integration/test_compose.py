"""Keep docker-compose.yml honest on a machine without Docker: every service, port,
volume and file it references exists and fits together; the Prometheus and
Alertmanager configs pass their own checkers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment") or {}
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {k: str(v) for k, v in value.items()}


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert {"kafka", "worker", "notifier", "publisher", "prometheus", "alertmanager", "grafana"} <= set(
        services(compose)
    )


def test_kafka_runs_in_kraft_mode_from_the_official_image(compose: dict[str, Any]) -> None:
    kafka = services(compose)["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    e = env(kafka)
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(e).upper()
    node, voter = e["KAFKA_NODE_ID"], e["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voter.startswith(f"{node}@kafka:")
    listeners = dict(x.split("://") for x in e["KAFKA_LISTENERS"].split(","))
    assert e["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert voter.rsplit(":", 1)[1] == listeners[e["KAFKA_CONTROLLER_LISTENER_NAMES"]].lstrip(":")
    protocols = dict(x.split(":") for x in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    advertised = dict(x.split("://") for x in e["KAFKA_ADVERTISED_LISTENERS"].split(","))
    # the host listener is published on the same port it listens on
    host_port = advertised["HOST"].rsplit(":", 1)[1]
    assert listeners["HOST"] == f":{host_port}"
    assert f"{host_port}:{host_port}" in kafka["ports"]


def test_the_worker_scales(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    assert "container_name" not in worker, "a fixed container_name forbids --scale worker=N"
    assert "ports" not in worker, "a fixed host port forbids --scale worker=N"
    assert worker.get("build") in (".", {"context": "."}) and (ROOT / "Dockerfile").is_file()


def test_workers_talk_to_the_broker_and_expose_metrics(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    e = env(worker)
    settings = Settings(**{k.removeprefix("BUDGETWATCH_").lower(): v for k, v in e.items()})
    kafka_env = env(services(compose)["kafka"])
    internal = dict(x.split("://") for x in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))[
        "PLAINTEXT"
    ]
    assert settings.kafka_bootstrap == internal
    assert settings.store == "rocksdb://"
    assert settings.web_bind == "0.0.0.0"
    assert str(settings.web_port) in [str(p) for p in worker["expose"]]
    assert int(kafka_env["KAFKA_NUM_PARTITIONS"]) == settings.partitions
    assert str(settings.web_port) in " ".join(worker["healthcheck"]["test"])
    assert "/metrics" in " ".join(worker["healthcheck"]["test"])


def test_the_notifier_keeps_its_store_on_a_volume_and_pushes_to_alertmanager(
    compose: dict[str, Any],
) -> None:
    svc = services(compose)
    notifier = svc["notifier"]
    assert notifier["command"] == ["notifier"]
    assert notifier["image"] == svc["worker"]["image"]
    e = env(notifier)
    settings = Settings(**{k.removeprefix("BUDGETWATCH_").lower(): v for k, v in e.items()})
    assert settings.kafka_bootstrap == env(svc["worker"])["BUDGETWATCH_KAFKA_BOOTSTRAP"]
    assert settings.partitions == Settings(partitions=env(svc["worker"])["BUDGETWATCH_PARTITIONS"]).partitions
    mounts = dict(v.split(":")[:2] for v in notifier["volumes"])
    assert str(Path(settings.db).parent) in mounts.values(), "the store must outlive the container"
    volume = next(k for k, v in mounts.items() if v == str(Path(settings.db).parent))
    assert volume in (compose.get("volumes") or {})
    assert settings.alertmanager_url is not None
    host, port = settings.alertmanager_url.removeprefix("http://").split(":")
    assert host in svc and f"{port}:{port}" in svc[host]["ports"]
    assert {"kafka", "alertmanager"} <= set(notifier["depends_on"])
    assert str(settings.web_port) in [str(p) for p in notifier["expose"]]
    assert f"{settings.web_port}/metrics" in " ".join(notifier["healthcheck"]["test"])
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["budgetwatch-notifier"]["static_configs"][0]["targets"] == [f"notifier:{settings.web_port}"]


def test_dependencies_wait_for_healthy_services(compose: dict[str, Any]) -> None:
    svc = services(compose)
    for name, service in svc.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in svc, f"{name} depends on unknown service {dep}"
            assert cond["condition"] == "service_healthy", f"{name} → {dep}"
            assert "healthcheck" in svc[dep], f"{dep} has no healthcheck but {name} waits for it"
    assert "kafka" in svc["worker"]["depends_on"]
    assert {"kafka", "worker"} <= set(svc["publisher"]["depends_on"])


def test_the_publisher_publishes_the_demo_year(compose: dict[str, Any]) -> None:
    publisher = services(compose)["publisher"]
    command = " ".join(publisher["command"])
    assert "budgetwatch generate" in command and "budgetwatch publish" in command
    assert "--as-of" in command
    assert publisher["image"] == services(compose)["worker"]["image"]
    assert publisher.get("restart") == "no"


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name} uses undeclared volume {source}"
            assert target.startswith("/")


def test_grafana_gets_the_provisioned_dashboards(compose: dict[str, Any]) -> None:
    grafana = services(compose)["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provider = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/budgetwatch.yml").read_text("utf-8")
    )
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./dashboards"] == path
    assert list((ROOT / "dashboards").glob("*.json")), "no dashboards to provision"
    datasource = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/prometheus.yml").read_text("utf-8")
    )
    url = datasource["datasources"][0]["url"]
    host, port = re.match(r"https?://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    assert host in services(compose)
    assert f"{port}:{port}" in services(compose)[host]["ports"]
    assert (
        mounts["./dashboards/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    )
    assert mounts["./dashboards/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"


def test_prometheus_scrapes_every_worker_and_knows_alertmanager(compose: dict[str, Any]) -> None:
    svc = services(compose)
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    mounts = dict(v.split(":")[:2] for v in svc["prometheus"]["volumes"])
    assert mounts["./deploy/prometheus/prometheus.yml"] in " ".join(svc["prometheus"]["command"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["budgetwatch-worker"]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert str(sd["port"]) == env(svc["worker"])["BUDGETWATCH_WEB_PORT"]
    assert jobs["budgetwatch-worker"]["metrics_path"] == "/metrics"
    target = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    host, port = target.split(":")
    assert host in svc and f"{port}:{port}" in svc[host]["ports"]
    am_mounts = dict(v.split(":")[:2] for v in svc["alertmanager"]["volumes"])
    assert am_mounts["./deploy/alertmanager/alertmanager.yml"] in " ".join(
        svc["alertmanager"]["command"]
    )


def test_ports_do_not_collide(compose: dict[str, Any]) -> None:
    published = [p.split(":")[0] for s in services(compose).values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))


def test_the_image_ships_what_the_worker_needs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = re.findall(r"^COPY (\S+)", dockerfile, flags=re.M)
    for path in copied:
        assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    # `pip install .` in the image builds from what was copied: every package of the wheel.
    for package in ("budget", "alerts", "connectors", "streams", "compiled_core.py"):
        assert package in copied, f"the Dockerfile does not COPY {package}/"
    assert "rocksdict" in dockerfile
    assert re.search(r'ENTRYPOINT \["budgetwatch"\]', dockerfile)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for path in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert path not in ignored


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which(tool)
    if binary is None:
        pytest.skip(
            f"{tool} is not installed (Debian package prometheus / prometheus-alertmanager)"
        )
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_prometheus_config() -> None:
    result = _run("promtool", "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert "20 rules found" in result.stdout + result.stderr  # the rule file it names was read


def test_the_workers_own_alerts_fire_when_they_should(compose: dict[str, Any]) -> None:
    """deploy/prometheus/rules.yml, unit-tested by promtool on made-up series: a worker
    down, sends to the broker failing, a partition's clock left behind, dead letters."""
    mounts = dict(v.split(":")[:2] for v in services(compose)["prometheus"]["volumes"])
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    (rules,) = config["rule_files"]
    assert mounts["./deploy/prometheus/rules.yml"] == f"/etc/prometheus/{rules}"
    result = _run("promtool", "test", "rules", str(ROOT / "tests" / "integration" / "prometheus_rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = _run("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_workers_alerts_go_to_operations_and_budget_alerts_to_the_office() -> None:
    def receiver(*labels: str) -> str:
        result = _run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    assert receiver("alertname=BudgetwatchWorkerDown", "team=ops", "severity=critical") == "operations"
    assert receiver("alertname=BudgetwatchDeadLetters", "team=ops", "severity=warning") == "operations"
    assert receiver("alertname=BudgetwatchNoWorkers", "team=ops", "severity=critical") == "operations"
    assert receiver("alertname=BudgetwatchProcessingBehind", "team=ops", "severity=warning") == "operations"
    assert receiver("alertname=low_execution", "severity=critical", "department=D101") == "budget-office"


def test_the_alertmanager_config_groups_and_inhibits_on_labels_budgetwatch_sends() -> None:
    """It grouped by department_id and rule and inhibited on subject_id, which no pushed
    alert carries: every budget alert fell in one group, and any critical alert silenced
    the same rule's warnings in every department."""
    from connectors.alertmanager import INHIBIT_RULES, alert_labels

    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    project = alert_labels({"rule": "low_execution", "severity": "critical", "department_id": "D101",
                            "fiscal_year": 2025, "subject_type": "project", "subject_id": "P1"})
    sent = set(project)
    assert set(config["route"]["group_by"]) <= sent
    for rule in config["inhibit_rules"]:
        assert set(rule["equal"]) <= sent, rule
    # the one `alertmanager-config` writes: a severity change ends an alert's old series,
    # so a rule equal on alertname (critical over warning of one rule) never inhibited
    assert config["inhibit_rules"] == INHIBIT_RULES
