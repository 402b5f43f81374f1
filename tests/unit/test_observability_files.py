"""deploy/observability: the dashboard and the alert rules name only metrics the services export,
and the scrape config reaches every service on the ports compose gives it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import scanfleet.agent.metrics
import scanfleet.common.metrics
import scanfleet.dispatcher.metrics
import scanfleet.janitor.metrics
import scanfleet.validator.metrics  # noqa: F401  (registers the validator's counters)
from scanfleet.cli.stack import SERVICES

OBS = Path(__file__).resolve().parents[2] / "deploy" / "observability"
COMPOSE = OBS.parent / "compose" / "docker-compose.yml"
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def exported() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names, label values or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard: dict[str, Any] = json.loads((OBS / "grafana-dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((OBS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_expression_parser_finds_metrics_and_ignores_the_rest() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, pool) (rate(a_b_bucket{status="x", y=~"z|w"}[5m]))) > on (pool) c'
    assert metric_names(expr) == {"a_b_bucket", "c"}


def test_the_services_export_the_origin_metric_names() -> None:
    origin = {
        "nessus_scans_total",
        "nessus_ttl_deletions_total",
        "nessus_active_scans",
        "nessus_scanner_instances",
        "nessus_dlq_size",
        "nessus_scanner_active_scans",
        "nessus_scanner_capacity",
        "nessus_scanner_utilization_pct",
        "nessus_pool_total_capacity",
        "nessus_pool_total_active",
        "nessus_pool_queue_depth",
        "nessus_pool_dlq_depth",
        "nessus_validation_total",
        "nessus_validation_failures_total",
        "nessus_auth_failures_total",
        "nessus_task_duration_seconds_bucket",
        "nessus_circuit_state",
        "nessus_circuit_opens_total",
    }
    assert origin <= exported(), sorted(origin - exported())


@pytest.mark.parametrize(("title", "expr"), dashboard_exprs())
def test_dashboard_queries_name_exported_metrics(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr!r}"
    assert names <= exported(), f"{title}: unknown {sorted(names - exported())}"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_rules_name_exported_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["alert"]
    assert names <= exported() | PROMETHEUS_OWN, f"{rule['alert']}: unknown {sorted(names - exported())}"
    assert rule["annotations"]["summary"]


def test_the_issue_s_alerts_are_all_there() -> None:
    wanted = {"DLQGrowing", "AuthFailureSpike", "StuckScans", "CircuitOpen", "AgentHeartbeatMissing"}
    assert wanted <= {r["alert"].removeprefix("Scanfleet") for r in rules()}


def test_scrape_config_reaches_every_replica_of_every_service_on_its_compose_port() -> None:
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    ops_port = yaml.safe_load(COMPOSE.read_text())["x-scanfleet"]["environment"]["SCANFLEET_SERVICE_PORT"]
    gateways = {name: svc for name, svc in compose.items() if svc.get("command") == ["gateway"]}
    assert len(gateways) >= 2
    (static,) = jobs["scanfleet-gateway"]["static_configs"]
    ports = {svc["environment"]["SCANFLEET_GATEWAY_PORT"] for svc in gateways.values()}
    assert sorted(static["targets"]) == sorted(f"{name}:{port}" for name in gateways for port in ports)
    assert static["labels"] == {"service": "gateway"}
    (dns,) = jobs["scanfleet-services"]["dns_sd_configs"]
    others = [s for s in SERVICES if s != "gateway"]
    assert sorted(dns["names"]) == sorted(others) and str(dns["port"]) == ops_port and dns["type"] == "A"
    assert all(compose[s]["command"] == [s] for s in others)
    relabel = jobs["scanfleet-services"]["relabel_configs"]
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in relabel
