"""Issue 10 item 6: deploy/observability/ as shipped. promtool checks the scrape configuration and
the rules; then Debian's Prometheus runs that configuration (only its targets, token file and
intervals replaced) against a whole system on free ports, and its HTTP API must show every target
up, the checkouts counted, every rule evaluating and every dashboard query valid.

Under CI (CI=true) a missing prometheus or promtool fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import yaml
from microshop_chassis.services import SERVICES
from microshop_chassis.testing import missing_outside_ci, wait_until
from microshop_cli.experiment import Target, stock_up
from microshop_cli.load import CheckoutLoad
from microshop_cli.system import System, SystemConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
RULE_FILES = [DEPLOY / "rules" / "recording.yml", DEPLOY / "rules" / "alerts.yml"]
SCRAPE = "1s"  # the test copy's scrape and evaluation interval: figures show up within seconds


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    missing_outside_ci(f"{binary}, not installed (apt-get install prometheus; .ci/run installs it)")


def shipped_config() -> dict:
    return yaml.safe_load((DEPLOY / "prometheus.yml").read_text())


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_shipped_configuration_and_rules():
    # --syntax-only: the shipped token file (/etc/prometheus/...) does not exist here; the live
    # test below checks the full configuration, token file and rules included.
    config = promtool("check", "config", "--syntax-only", str(DEPLOY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", *map(str, RULE_FILES))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_the_shipped_configuration_scrapes_every_service_and_only_the_gateway_with_a_token():
    jobs = {job["job_name"]: job for job in shipped_config()["scrape_configs"]}
    assert set(jobs) == {spec.name for spec in SERVICES}
    for spec in SERVICES:
        targets = [t for group in jobs[spec.name]["static_configs"] for t in group["targets"]]
        assert targets == [f"127.0.0.1:{spec.port}"], (spec.name, targets)  # the ports `microshop up` uses
    assert [name for name, job in jobs.items() if "authorization" in job] == ["gateway"]
    assert "credentials_file" in jobs["gateway"]["authorization"]


def dashboard_queries() -> dict[str, list[str]]:
    """Each panel's PromQL, with Grafana's variables given the values a query would have."""
    dashboard = json.loads((DEPLOY / "grafana" / "microshop.json").read_text())
    grafana = {"$__rate_interval": "1m", "$__range": "5m", "$job": ".*"}
    queries = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        exprs = []
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in grafana.items():
                expr = expr.replace(variable, value)
            exprs.append(expr)
        queries[panel["title"]] = exprs
    return queries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    """A Prometheus server and its HTTP API."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http

    async def api(self, path: str, **params: str) -> dict | list:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as reply:
            body = await reply.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[dict]:
        return (await self.api("query", query=expr))["result"]

    async def scalar(self, expr: str) -> float | None:
        """The value of a query that gives at most one series; None when it gives none."""
        result = await self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None


def config_for(system: System, token_file: Path) -> dict:
    """The shipped configuration with this system's targets, the token file and 1 s intervals."""
    config = shipped_config()
    config["global"].update(scrape_interval=SCRAPE, scrape_timeout=SCRAPE, evaluation_interval=SCRAPE)
    config["rule_files"] = [str(path) for path in RULE_FILES]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{system.port(name)}"
                                              for name in system.replicas(job["job_name"])]}]
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token_file)
    return config


async def service_token(system: System) -> str:
    """What the shipped README's timer writes into the gateway's token file."""
    async with aiohttp.ClientSession() as http, http.post(
        system.url("users") + "/service-tokens",
        json={"service": "prometheus", "secret": system.env["MICROSHOP_SERVICE_SECRET"]},
    ) as reply:
        assert reply.status == 200, await reply.text()
        return (await reply.json())["access_token"]


@asynccontextmanager
async def running_prometheus(config_file: Path, data: Path) -> AsyncIterator[Prometheus]:
    port = free_port()  # never 9090: a packaged Prometheus may be running there
    log = (data / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        require("prometheus"), f"--config.file={config_file}", f"--storage.tsdb.path={data / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", stdout=log, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            prometheus = Prometheus(f"http://127.0.0.1:{port}", http)

            async def ready() -> bool:
                assert process.returncode is None, (data / "prometheus.log").read_text()[-3000:]
                try:
                    async with http.get(f"{prometheus.url}/-/ready") as reply:
                        return reply.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, timeout=30, what="Prometheus ready", interval=0.2)
            yield prometheus
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def test_prometheus_scrapes_a_running_system_and_sees_the_checkouts(tmp_path):
    require("prometheus")
    data = tmp_path / "prometheus"
    data.mkdir()
    config = SystemConfig.with_free_ports(tmp_path / "system",
                                          extra_env={"MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2"})
    async with System(config) as system:
        token_file = data / "gateway.token"
        token_file.write_text(await service_token(system))
        config_file = data / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config_for(system, token_file), sort_keys=False))
        full = promtool("check", "config", str(config_file))  # rules and token file included
        assert full.returncode == 0, full.stdout + full.stderr
        await stock_up(Target.of(system), 200)

        async with running_prometheus(config_file, data) as prometheus:
            await every_target_up(prometheus)
            await checkouts_counted(prometheus, system)
            await rules_evaluate(prometheus)
            await dashboard_queries_answer(prometheus)


async def every_target_up(prometheus: Prometheus) -> None:
    async def all_up():
        targets = (await prometheus.api("targets", state="active"))["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    try:
        targets = await wait_until(all_up, timeout=30, what="every target up", interval=0.2)
    except TimeoutError:
        targets = (await prometheus.api("targets", state="active"))["activeTargets"]
        raise AssertionError({t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}) from None
    assert {t["labels"]["job"] for t in targets} == {spec.name for spec in SERVICES}


async def checkouts_counted(prometheus: Prometheus, system: System) -> None:
    load = CheckoutLoad(system.url("gateway"), rate=10, seed=20261210, declined=0.25, sold_out=0.0, cancel=0.0)
    # Two halves: rate() needs two samples of a series, and a counter scraped for the first time
    # after all the checkouts would read as flat. The second half lands on a series already stored.
    first = await load.run(checkouts=10)
    assert len(first.accepted_order_ids) == 10, first.summary()
    await wait_until(lambda: prometheus.scalar("sum(checkouts_total)"), timeout=30, what="checkouts scraped",
                     interval=0.2)
    second = await load.run(checkouts=10)
    assert len(second.accepted_order_ids) == 10, second.summary()
    answered = first.outcomes() + second.outcomes()  # each order's status in its 201: all ended at once

    async def all_counted():
        return await prometheus.scalar("sum(checkouts_total)") == 20

    await wait_until(all_counted, timeout=30, what="20 checkouts ended, as Prometheus sees them", interval=0.2)
    assert (await prometheus.scalar("sum(rate(checkouts_total[1m]))") or 0) > 0
    outcomes = Counter({r["metric"]["outcome"]: int(float(r["value"][1]))
                        for r in await prometheus.query("sum by (outcome) (checkouts_total)")})
    assert outcomes == answered and outcomes["CONFIRMED"] and outcomes["REJECTED"], (outcomes, answered)
    # Every rejection was a declined card (the stock is plenty), and so Prometheus says.
    assert await prometheus.scalar("sum(order_rejections_total)") == outcomes["REJECTED"]
    assert {r["metric"]["reason"] for r in await prometheus.query("order_rejections_total")} == {"payment_declined"}
    assert (await prometheus.scalar("sum(revenue_cents_total)") or 0) > 0
    assert await prometheus.scalar("sum(saga_duration_seconds_count)") == 20


async def rules_evaluate(prometheus: Prometheus) -> None:
    async def all_evaluated():
        rules = [rule for group in (await prometheus.api("rules"))["groups"] for rule in group["rules"]]
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = await wait_until(all_evaluated, timeout=30, what="every rule evaluated", interval=0.2)
    shipped = [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
               for rule in group["rules"]]
    assert len(rules) == len(shipped)
    # Declined cards are the customer's answer, not the system's failure: the SLI stays at 100%.
    async def success() -> float | None:  # NaN (truthy) until the rule has seen a rate: not yet a figure
        ratio = await prometheus.scalar("microshop:checkout_success:ratio_rate5m")
        return None if ratio is None or math.isnan(ratio) else ratio

    assert await wait_until(success, timeout=30, what="the checkout SLI recorded", interval=0.2) == 1.0
    alerts = {a["labels"]["alertname"]: a["state"] for a in (await prometheus.api("alerts"))["alerts"]}
    # A healthy system raises nothing; only a latency alert may be pending, since with 20 checkouts
    # one cold first request is the p99.
    assert set(alerts) <= {"CheckoutSlow", "SagasSlow"} and "firing" not in alerts.values(), alerts


async def dashboard_queries_answer(prometheus: Prometheus) -> None:
    answers = {title: [await prometheus.query(expr) for expr in exprs]
               for title, exprs in dashboard_queries().items()}  # each one valid PromQL, or api() fails
    for title in ("Checkouts per minute, by outcome", "Revenue per minute", "Saga duration, order to outcome",
                  "Rejections per minute, by reason", "Revenue over the time range"):
        assert all(answers[title]), (title, answers[title])
    served = {series["metric"]["job"] for series in answers["Requests per second"][0]}
    assert served == {spec.name for spec in SERVICES}
