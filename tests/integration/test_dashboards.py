"""The Grafana dashboards refer only to what `budgetwatch serve` really exposes.

Grafana itself cannot run on this machine (no Grafana package or binary can be
installed here), so the dashboards are checked against a live scrape of a real
`budgetwatch serve` on 127.0.0.1: every metric name and every label used in a
PromQL expression, a legend or a template variable exists in that scrape, and
every panel uses the datasource uid that the provisioning file defines. (The
Prometheus test evaluates the same expressions in a real Prometheus.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.serve_process import county_year, post_and_wait, serve

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning"

# PromQL words that are not metric names.
KEYWORDS = {
    "sum", "avg", "min", "max", "count", "sort", "sort_desc", "rate", "irate", "increase",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "vector", "offset", "topk", "bottomk", "abs", "clamp_min", "clamp_max",
    "count_over_time", "label_values", "time",
}
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"[^"]*"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) used in a PromQL expression."""
    metrics: set[str] = set()
    labels: set[str] = set()
    for match in SELECTOR.finditer(expr):
        if match.group(1) and match.group(1) not in KEYWORDS:
            metrics.add(match.group(1))
        labels.update(MATCHER.findall(match.group(2)))
    rest = SELECTOR.sub(" ", expr)
    for match in GROUPING.finditer(rest):
        labels.update(x.strip() for x in match.group(1).split(",") if x.strip())
    rest = GROUPING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    for match in IDENT.finditer(rest):
        word = match.group(0)
        following = rest[match.end():].lstrip()
        if word in KEYWORDS or following.startswith("("):
            continue
        metrics.add(word)
    return metrics, labels


def boards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        yield path.name, json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """metric name -> label names, from a live scrape of `budgetwatch serve`."""
    tmp = tmp_path_factory.mktemp("dashboards")
    with serve(tmp) as url:
        assert post_and_wait(url, county_year(projects=60))["processed"] is True
        text = httpx.get(f"{url}/metrics", timeout=30).text
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    assert "budget_project_execution_ratio" in found  # the scrape has projects in alert
    return found


def test_the_promql_reader_finds_names_and_labels() -> None:
    metrics, labels = promql_names(
        'sort(sum by (rule, severity) (budget_alerts_firing{department="$department"}) '
        "* on (department) group_left (department_name) budget_department_info) "
        "or vector(0) + rate(budget_events_total[5m])"
    )
    assert metrics == {"budget_alerts_firing", "budget_department_info", "budget_events_total"}
    assert labels == {"rule", "severity", "department", "department_name"}


@pytest.fixture(scope="module")
def stack_exposed() -> dict[str, set[str]]:
    """metric name -> label names a Faust worker of the compose stack exports, after a
    few events and a tick through its real agents (no broker: the test driver)."""
    import asyncio

    from connectors.profiles import load_profile
    from connectors.synthetic import Spec, generate
    from tests.functional.faust_harness import make_app, running

    bapp, outlet = make_app(load_profile("baseline"), partitions=2)

    async def scenario() -> None:
        async with running(bapp, outlet) as h:
            await h.publish(list(generate(Spec(projects=20, seed=4)))[:200])
            await h.tick("2025-07-01")

    asyncio.run(scenario())
    found: dict[str, set[str]] = {}
    for family in bapp.metrics.registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_expression_uses_only_exposed_names(
    exposed: dict[str, set[str]], stack_exposed: dict[str, set[str]]
) -> None:
    """A target with refId "stack" is for the compose stack, where the series of serve
    do not exist and no recording rule can make them (a counter summed over workers
    breaks rate() on restarts): it is checked against what a worker exports."""
    checked = 0
    for name, board in boards():
        for panel in board["panels"]:
            for target in panel["targets"]:
                exposed_here = stack_exposed if target.get("refId") == "stack" else exposed
                metrics, labels = promql_names(target["expr"])
                where = f"{name} «{panel['title']}» {target['expr']}"
                assert metrics, where
                assert metrics <= set(exposed_here), f"{where}: not exposed {metrics - set(exposed_here)}"
                available = set().union(*(exposed_here[m] for m in metrics))
                assert labels <= available, f"{where}: labels {labels - available}"
                legend = set(LEGEND.findall(target.get("legendFormat", "")))
                assert legend <= available, f"{where}: legend labels {legend - available}"
                checked += 1
        for variable in board["templating"]["list"]:
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert match, f"{name}: variable {variable['name']} query {query}"
            assert match.group(2) in exposed[match.group(1)]
    assert checked >= 20


def test_panels_use_the_provisioned_datasource_uid() -> None:
    datasources = PROVISIONING / "datasources" / "prometheus.yml"
    provisioned = yaml.safe_load(datasources.read_text("utf-8"))
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    uid = source["uid"]
    assert uid == "budgetwatch-prometheus"
    for name, board in boards():
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": uid}, name
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, name
        for variable in board["templating"]["list"]:
            assert variable["datasource"]["uid"] == uid, name


def test_the_dashboards_provider_loads_this_folder_and_the_boards_are_distinct() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "budgetwatch.yml").read_text("utf-8"))
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == "/var/lib/grafana/dashboards"
    found = dict(boards())
    assert set(found) == {"overview.json", "department.json"}
    assert len({b["uid"] for b in found.values()}) == 2
    variables = [v["name"] for v in found["department.json"]["templating"]["list"]]
    assert variables == ["department"]
    for board in found.values():
        tags = [a["target"]["tags"] for a in board["annotations"]["list"] if "target" in a]
        assert tags and all("budgetwatch" in t for t in tags)  # alert transitions as annotations


# What a legend's label values are shown as: the dashboards' displayName overrides.
OUTCOME_NAMES = {"applied": "已处理", "duplicate": "重复", "rejected": "已拒收", "buffered": "已缓存待处理",
                 "redelivered": "重复投递"}


def test_legends_show_label_values_in_chinese_and_money_in_wan() -> None:
    """Legends read general / low_execution / critical / applied, and money showed as
    ¥3.44B (currencyCNY) on panels titled （元） (text audit M7, M8)."""
    import itertools

    from alerts.messages import FUND_SOURCE_NAMES, RULE_NAMES, SEVERITY_NAMES

    tables = {"fund_source": FUND_SOURCE_NAMES, "rule": RULE_NAMES, "severity": SEVERITY_NAMES,
              "outcome": OUTCOME_NAMES}
    checked = 0
    for name, board in boards():
        for panel in board["panels"]:
            overrides = {o["matcher"]["options"]: o["properties"][0]["value"]
                         for o in panel.get("fieldConfig", {}).get("overrides", [])
                         if o["properties"][0]["id"] == "displayName"}
            for target in panel.get("targets", []):
                used = [u for u in LEGEND.findall(target.get("legendFormat", "")) if u in tables]
                for combo in itertools.product(*(tables[u].items() for u in used)) if used else ():
                    series = target["legendFormat"]
                    for label, (value, _) in zip(used, combo, strict=True):
                        series = series.replace(f"{{{{{label}}}}}", value)
                    shown = overrides.get(series, "")
                    assert all(chinese in shown for _, chinese in combo), (name, panel["title"], series)
                    checked += 1
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            assert unit != "currencyCNY", (name, panel["title"])
            if unit == "suffix:万元":
                assert "（万元）" in panel["title"] and all("/ 10000" in t["expr"] for t in panel["targets"])
    assert checked >= 4 * 2 + 6 * 2 + 3
