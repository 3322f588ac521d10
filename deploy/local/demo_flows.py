"""`make demo`: the built flows, end to end on the local stack with generated data.

IoT: ``python -m indutech_devtools.iot`` writes SAN files (JSON Lines, CSV, gzip-rotated)
while ``iot-ingest``, ``iot-to-s3`` and ``iot-aggregator`` run as real processes; the demo
waits until every generated record is in the lake exactly once, then until the
aggregator's final 10 s windows hold them, prints the top customers by revenue and
checks the aggregates against the generated records.
``metrics-shipper`` runs beside them: their metrics and logs go to the CloudWatch
stand-in, and its status page of the seven flows is printed (``STATUS_URL``).
Identity: a small on-prem OU with users and a group is synced to the AWS side
by ``identity-sync --once``, then a change and a disable follow it across.

Each run uses its own topics, lake prefix, consumer groups, warehouse schema
(``demo_agg_<run>``) and OUs (``demo-<run>``), so runs never see each other's data;
the topics, the schema and the OUs are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import ldap3
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from dotenv import dotenv_values

from demo_sql import sql_demo
from indutech_common.ldap import ldap_connect
from indutech_common.logging import configure_logging
from indutech_common.schemas import Topics
from indutech_common.warehouse import connect_warehouse
from indutech_devtools.iot import GenerateOptions, records
from tests.support.directory import delete_subtree
from tests.support.kafka import create_topics, delete_topics
from tests.support.stack import REPO_ROOT, StackSettings, load_stack, stack_env_file
from tests.support.waits import scrape_counter

BIN = Path(sys.executable).parent


def say(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class DemoTopics:
    sensor: str
    ticket: str
    dead_letter: str
    checkpoint: str

    @property
    def contract(self) -> dict[str, str]:
        """Each topic's entry in the topic contract: created with its settings."""
        return {
            self.sensor: Topics.SENSOR_READINGS,
            self.ticket: Topics.CLIENT_TICKETS,
            self.dead_letter: Topics.DEAD_LETTER,
            self.checkpoint: Topics.INGEST_CHECKPOINTS,
        }

    @classmethod
    def for_run(cls, run: str) -> DemoTopics:
        return cls(
            sensor=f"demo.{run}.sensor-readings",
            ticket=f"demo.{run}.client-tickets",
            dead_letter=f"demo.{run}.dead-letter",
            checkpoint=f"demo.{run}.ingest-checkpoints",
        )


def base_env() -> dict[str, str]:
    """This process's environment minus worker settings, plus the stack's INDUTECH_*."""
    prefixes = (
        "INDUTECH_",
        "IOT_INGEST_",
        "IOT_TO_S3_",
        "IOT_AGGREGATOR_",
        "IDENTITY_SYNC_",
        "SQL_BACKUP_",
        "METRICS_SHIPPER_",
        "SQL_TO_REDSHIFT_",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None})
    env.update({"PYTHONUNBUFFERED": "1", "INDUTECH_LOGGING__FORMAT": "json"})
    return env


def lake_rows(stack: StackSettings, prefix: str) -> tuple[int, int, int]:
    """(rows, distinct event ids, objects) of the lake under ``prefix``."""
    s3 = stack.s3
    if s3.access_key_id is None or s3.secret_access_key is None:
        raise RuntimeError("the local stack's S3 keys are missing from stack.env: make stack-up")
    filesystem = pafs.S3FileSystem(
        access_key=s3.access_key_id.get_secret_value(),
        secret_key=s3.secret_access_key.get_secret_value(),
        endpoint_override=str(s3.endpoint_url),
        region=s3.region,
        tls_ca_file_path=str(s3.ca_file),
    )
    root = f"{s3.lake_bucket}/{prefix}"
    files = [
        info.path
        for info in filesystem.get_file_info(
            pafs.FileSelector(root, recursive=True, allow_not_found=True)
        )
        if info.path.endswith(".parquet")
    ]
    if not files:
        return 0, 0, 0
    dataset = ds.dataset(files, filesystem=filesystem, format="parquet")
    ids = dataset.to_table(columns=["event_id"]).column("event_id")
    return len(ids), len(set(ids.to_pylist())), len(files)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=out)


def stop(name: str, process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    say(f"   {name}: SIGTERM → drained and exited {code} ({time.monotonic() - started:.1f} s)")
    return code


AGGREGATE_WINDOW_S = 10  # small windows: the last ones close seconds after the data ends
AGGREGATES_TIMEOUT_S = 60
GENERATOR_SEED = 1


@dataclass(frozen=True)
class Generated:
    """What the generator wrote, recomputed from its seed and start: the aggregates'
    reference."""

    tickets: Counter[tuple[str, str]]  # (customer, region) → tickets
    revenue: dict[tuple[str, str], Decimal]
    readings: int

    @classmethod
    def of(cls, start: datetime, count: int) -> Generated:
        tickets: Counter[tuple[str, str]] = Counter()
        revenue: dict[tuple[str, str], Decimal] = {}
        readings = 0
        options = GenerateOptions(Path(), seed=GENERATOR_SEED, count=count, start=start)
        for kind, record in records(options):
            if kind == "sensor":
                readings += 1
                continue
            key = (record["customer_id"], record["region"])
            tickets[key] += 1
            revenue[key] = revenue.get(key, Decimal("0.00")) + Decimal(record["revenue"])
        return cls(tickets, revenue, readings)


async def warehouse_fetch(stack: StackSettings, sql: str) -> list[Any]:
    connection = await connect_warehouse(stack.warehouse)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


def aggregated_so_far(stack: StackSettings, schema: str) -> tuple[int, int, bool]:
    """(tickets, readings, every window final) in the aggregator's views; zeros while
    the worker has not created them yet."""
    sql = (
        f"SELECT (SELECT COALESCE(SUM(ticket_count), 0) FROM {schema}.ticket_aggregates), "  # noqa: S608 - the demo's own schema name
        f"(SELECT COALESCE(SUM(reading_count), 0) FROM {schema}.reading_aggregates), "
        f"(SELECT COALESCE(BOOL_AND(final), false) FROM {schema}.ticket_aggregates) "
        f"AND (SELECT COALESCE(BOOL_AND(final), false) FROM {schema}.reading_aggregates)"
    )
    try:
        row = asyncio.run(warehouse_fetch(stack, sql))[0]
    except asyncpg.PostgresError:  # schema or views not created yet
        return 0, 0, False
    return int(row[0]), int(row[1]), bool(row[2])


def wait_for_aggregates(stack: StackSettings, schema: str, reference: Generated) -> None:
    """Until the final windows hold every generated record (or a minute): the aggregator
    closes its last windows ``idle_close_s`` after the data stops."""
    started = time.monotonic()
    wanted = (reference.tickets.total(), reference.readings)
    tickets = readings = 0
    final = False
    while time.monotonic() - started < AGGREGATES_TIMEOUT_S:
        tickets, readings, final = aggregated_so_far(stack, schema)
        if final and tickets >= wanted[0] and readings >= wanted[1]:
            break
        time.sleep(0.5)
    say(
        f"   iot-aggregator: final windows hold {tickets}/{wanted[0]} tickets and "
        f"{readings}/{wanted[1]} readings ({time.monotonic() - started:.1f} s after the lake)"
    )


def check_aggregates(stack: StackSettings, schema: str, reference: Generated | None) -> bool:
    """Print the top customers by revenue and compare every customer/region's count and
    revenue, and the reading count, with what was generated."""
    if reference is None:
        say("   aggregates: not checked, the generator did not finish")
        return False
    groups = asyncio.run(
        warehouse_fetch(
            stack,
            "SELECT customer_id, region, SUM(ticket_count), SUM(revenue_sum), "  # noqa: S608 - the demo's own schema name
            "SUM(latency_sum_ms), SUM(latency_count), SUM(late_events) "
            f"FROM {schema}.ticket_aggregates GROUP BY customer_id, region",
        )
    )
    windows, reading_rows, reading_groups, readings = asyncio.run(
        warehouse_fetch(
            stack,
            "SELECT COUNT(DISTINCT window_start), COUNT(*), "  # noqa: S608 - the demo's own schema name
            "COUNT(DISTINCT (sensor_id, site, metric)), COALESCE(SUM(reading_count), 0) "
            f"FROM {schema}.reading_aggregates",
        )
    )[0]
    counts = {(g[0], g[1]): int(g[2]) for g in groups}
    revenue = {(g[0], g[1]): Decimal(g[3]) for g in groups}
    late = sum(int(g[6]) for g in groups)
    say(f"   aggregates in {schema} ({AGGREGATE_WINDOW_S} s windows), top 5 by revenue:")
    say(f"     {'customer':<11} {'region':<11} {'tickets':>7} {'revenue':>12} {'avg latency':>12}")
    top = sorted(groups, key=lambda g: (-Decimal(g[3]), g[0], g[1]))[:5]
    for customer, region, count, total, latency_sum, latency_count, _ in top:
        average = f"{latency_sum / latency_count:.0f} ms" if latency_count else "-"
        say(f"     {customer:<11} {region:<11} {count:>7} {total:>12} {average:>12}")
    say(
        f"     all: {sum(counts.values())} tickets, revenue {sum(revenue.values(), Decimal(0))} "
        f"over {len(groups)} customer/region groups ({late} late corrections); "
        f"{readings} readings in {reading_groups} sensor/site/metric groups "
        f"({reading_rows} rows over {windows} windows)"
    )
    generated_total = sum(reference.revenue.values(), Decimal(0))
    say(
        f"     generated: {reference.tickets.total()} tickets, revenue {generated_total}, "
        f"{reference.readings} readings"
    )
    equal = (
        counts == dict(reference.tickets)
        and revenue == reference.revenue
        and readings == reference.readings
    )
    say(f"   aggregates: equal to the generated records: {equal}")
    return equal


def drop_schema(stack: StackSettings, schema: str) -> None:
    async def drop() -> None:
        connection = await connect_warehouse(stack.warehouse)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()

    asyncio.run(drop())


def start_aggregator(
    env: dict[str, str], topics: DemoTopics, schema: str, run: str, work: Path
) -> subprocess.Popen[bytes]:
    """iot-aggregator on the run's topics, with its own consumer group and warehouse
    schema (as its tests isolate themselves), and windows small enough to close soon."""
    aggregator_env = env | {
        "IOT_AGGREGATOR_SENSOR_TOPIC": topics.sensor,
        "IOT_AGGREGATOR_TICKET_TOPIC": topics.ticket,
        "IOT_AGGREGATOR_DEAD_LETTER_TOPIC": topics.dead_letter,
        "IOT_AGGREGATOR_GROUP_ID": f"iot-aggregator-demo-{run}",
        "IOT_AGGREGATOR_WAREHOUSE_SCHEMA": schema,  # dropped at the end, as the tests do
        "IOT_AGGREGATOR_WINDOW_S": str(AGGREGATE_WINDOW_S),
        "IOT_AGGREGATOR_GRACE_S": "2",
        "IOT_AGGREGATOR_EMIT_INTERVAL_S": "1",
        "IOT_AGGREGATOR_IDLE_CLOSE_S": "1",
        "IOT_AGGREGATOR_HEALTH__HOST": "127.0.0.1",
        "IOT_AGGREGATOR_HEALTH__PORT": "18183",
    }
    return start(
        [sys.executable, "-m", "indutech_iot_aggregator"],
        aggregator_env,
        work / "iot-aggregator.log",
    )


SHIPPER_PORT = 18180
STATUS_URL = f"http://127.0.0.1:{SHIPPER_PORT}/status"
IOT_LOGS = ("iot-ingest.log", "iot-to-s3.log", "iot-aggregator.log")


def start_shipper(env: dict[str, str], run: str, work: Path) -> subprocess.Popen[bytes]:
    """metrics-shipper beside the IoT workers: their /metrics, their consumer groups' lag
    and the warehouse queue to the CloudWatch stand-in (moto), their log files to the log
    group /indutech/demo/<run>, and the seven flows' status page on its port."""
    state = work / "metrics-shipper"
    shipper_env = env | {
        "METRICS_SHIPPER_TARGETS": ",".join(
            f"http://127.0.0.1:{port}/metrics" for port in (18181, 18182, 18183)
        ),
        "METRICS_SHIPPER_LAG_GROUPS": f"iot-to-s3-demo-{run},iot-aggregator-demo-{run}",
        "METRICS_SHIPPER_INTERVAL_S": "10",
        "METRICS_SHIPPER_BUFFER_DIR": str(state / "buffer"),
        "METRICS_SHIPPER_LOG_DIR": str(work),
        "METRICS_SHIPPER_LOG_PATTERNS": ",".join(IOT_LOGS),
        "METRICS_SHIPPER_LOG_STATE_DIR": str(state / "logs"),
        "METRICS_SHIPPER_LOG_GROUP": f"/indutech/demo/{run}",
        "METRICS_SHIPPER_HEALTH__HOST": "127.0.0.1",
        "METRICS_SHIPPER_HEALTH__PORT": str(SHIPPER_PORT),
    }
    return start([str(BIN / "metrics-shipper"), "run"], shipper_env, work / "metrics-shipper.log")


def flow_states() -> str:
    """The flows' states as the shipper's status page shows them, on one line."""
    try:
        with urllib.request.urlopen(STATUS_URL, timeout=2) as response:
            page = response.read().decode()
    except OSError as exc:
        return f"did not answer ({exc})"
    rows = re.findall(r'data-flow="(\d+)" data-state="(\w+)"', page)
    return ", ".join(f"flow {flow} {state}" for flow, state in rows)


def wait_for_shipper(timeout_s: float = 30.0) -> None:
    """Until metrics-shipper has delivered datums (its cycle is 10 s here, and the IoT part
    can finish before its first cycle that found the workers up), or the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (scrape_counter(SHIPPER_PORT, "indutech_shipper_datums_sent_total") or 0) > 0:
            return
        time.sleep(0.5)


def shipper_summary(run: str) -> None:
    datums = scrape_counter(SHIPPER_PORT, "indutech_shipper_datums_sent_total")
    lines = scrape_counter(SHIPPER_PORT, "indutech_shipper_log_events_sent_total")
    if datums is None or lines is None:
        say("   metrics-shipper: its /metrics did not answer")
        return
    say(
        f"   metrics-shipper: {datums:.0f} datums and {lines:.0f} log lines delivered to the "
        f"CloudWatch stand-in (log group /indutech/demo/{run})"
    )


def wait_for_lake(
    stack: StackSettings, generator: subprocess.Popen[str], prefix: str, seconds: float
) -> tuple[int | None, int, int]:
    """(generated, rows, distinct event ids) once the lake holds every generated record,
    or at the deadline."""
    expected: int | None = None
    deadline = time.monotonic() + seconds + 120
    rows = distinct = objects = 0
    while time.monotonic() < deadline:
        if expected is None and generator.poll() is not None:
            output = generator.stdout.read() if generator.stdout else ""
            say(f"   generator: {output.strip()}")
            match = re.search(r"wrote (\d+) records", output)
            if generator.returncode != 0 or match is None:
                raise RuntimeError(f"the generator failed ({generator.returncode})")
            expected = int(match.group(1))
        rows, distinct, objects = lake_rows(stack, prefix)
        produced = scrape_counter(18181, "indutech_records_out_total")
        target = "…" if expected is None else str(expected)
        sent = "starting" if produced is None else f"{produced:.0f}"
        say(
            f"   progress: {sent}/{target} records sent to Kafka, "
            f"{rows}/{target} in the lake ({objects} Parquet objects)"
        )
        if expected is not None and rows >= expected:
            break
        time.sleep(3)
    return expected, rows, distinct


def iot_demo(stack: StackSettings, run: str, work: Path, seconds: float, rate: float) -> bool:
    say(
        "== IoT: generator → SAN files → iot-ingest → Kafka (exactly-once) → iot-to-s3 → lake,"
        " and → iot-aggregator → warehouse"
    )
    topics = DemoTopics.for_run(run)
    asyncio.run(create_topics(stack.kafka, topics.contract))
    san = work / "san"
    san.mkdir(parents=True)
    prefix = f"demo/{run}/"
    env = base_env()
    ingest_env = env | {
        "IOT_INGEST_SAN_DIR": str(san),
        "IOT_INGEST_SENSOR_TOPIC": topics.sensor,
        "IOT_INGEST_TICKET_TOPIC": topics.ticket,
        "IOT_INGEST_DEAD_LETTER_TOPIC": topics.dead_letter,
        "IOT_INGEST_CHECKPOINT_TOPIC": topics.checkpoint,
        "IOT_INGEST_TRANSACTIONAL_ID": f"iot-ingest-demo-{run}",
        "IOT_INGEST_HEALTH__HOST": "127.0.0.1",
        "IOT_INGEST_HEALTH__PORT": "18181",
        "IOT_INGEST_GZIP_SETTLE_S": "0.3",
    }
    lake_env = env | {
        "IOT_TO_S3_SENSOR_TOPIC": topics.sensor,
        "IOT_TO_S3_TICKET_TOPIC": topics.ticket,
        "IOT_TO_S3_DEAD_LETTER_TOPIC": topics.dead_letter,
        "IOT_TO_S3_GROUP_ID": f"iot-to-s3-demo-{run}",
        "IOT_TO_S3_LAKE_PREFIX": prefix,
        "IOT_TO_S3_ROTATION__MAX_AGE_S": "5",
        "IOT_TO_S3_ROTATION__IDLE_S": "2",
        "IOT_TO_S3_HEALTH__HOST": "127.0.0.1",
        "IOT_TO_S3_HEALTH__PORT": "18182",
    }
    ingest = start([str(BIN / "iot-ingest"), "run"], ingest_env, work / "iot-ingest.log")
    to_s3 = start([str(BIN / "iot-to-s3")], lake_env, work / "iot-to-s3.log")
    schema = f"demo_agg_{run}"
    aggregator = start_aggregator(env, topics, schema, run, work)
    shipper = start_shipper(env, run, work)
    say(f"   iot-ingest (pid {ingest.pid}) watches {san}; logs {work}/iot-ingest.log")
    say(f"   iot-to-s3 (pid {to_s3.pid}) writes s3://{stack.s3.lake_bucket}/{prefix}")
    say(f"   iot-aggregator (pid {aggregator.pid}) writes warehouse schema {schema}")
    say(
        f"   metrics-shipper (pid {shipper.pid}) ships their metrics and logs to the CloudWatch "
        f"stand-in; status page of the seven flows: {STATUS_URL} (while the IoT part runs)"
    )
    # an explicit start (not "now"), so the demo can recompute what was generated
    generated_from = datetime.now(UTC)
    generator = subprocess.Popen(
        [
            *(
                sys.executable,
                "-m",
                "indutech_devtools.iot",
                "--dir",
                str(san),
                "--rate",
                str(rate),
            ),
            *("--duration", str(seconds), "--rotate-every", "2000", "--gzip"),
            *("--seed", str(GENERATOR_SEED), "--start", generated_from.isoformat()),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    reference: Generated | None = None
    expected: int | None = None
    rows = distinct = 0
    try:
        expected, rows, distinct = wait_for_lake(stack, generator, prefix, seconds)
        if expected is not None:
            reference = Generated.of(generated_from, expected)
            wait_for_aggregates(stack, schema, reference)
    finally:
        if generator.poll() is None:
            generator.kill()
        say(f"   status page {STATUS_URL}: {flow_states()}")
        wait_for_shipper()  # before the workers stop: it ships what they export
        stop("iot-ingest", ingest)
        stop("iot-to-s3", to_s3)
        drained = stop("iot-aggregator", aggregator) == 0
        shipper_summary(run)
        stop("metrics-shipper", shipper)
        asyncio.run(delete_topics(stack.kafka, list(topics.contract)))
        if reference is None:  # failed before the check below, which drops it after
            drop_schema(stack, schema)
    exact = expected is not None and rows == expected == distinct
    verdict = "exactly once" if exact else "MISMATCH (see the logs above)"
    say(f"   lake: {rows} rows, {distinct} distinct event ids for {expected} generated: {verdict}")
    try:
        # read after the drain: the views then hold everything the worker committed
        equal = check_aggregates(stack, schema, reference)
    finally:
        drop_schema(stack, schema)
    return exact and equal and drained


def first(value: Any) -> str:
    """One LDAP value as text, whether the schema-less reply gave a list or a scalar."""
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    return str(value) if value is not None else ""


class Directories:
    """The demo's OU on each DC, written as an administrator would."""

    def __init__(self, stack: StackSettings, run: str) -> None:
        self.settings = {"onprem": stack.ad_onprem, "aws": stack.ad_aws}
        self.roots = {
            "onprem": f"OU=demo-{run},OU=InduTech,{stack.ad_onprem.base_dn}",
            "aws": f"OU=demo-{run},OU=AWS,{stack.ad_aws.base_dn}",
        }
        self.connections = {
            "onprem": ldap_connect(stack.ad_onprem),
            "aws": ldap_connect(stack.ad_aws),
        }
        for side, root in self.roots.items():
            self._ok(side, self.connections[side].add(root, ["organizationalUnit"]))

    def _ok(self, side: str, done: bool) -> None:
        if not done:
            raise RuntimeError(f"{side} directory refused: {self.connections[side].result}")

    def add(self, dn: str, classes: list[str], attributes: dict[str, Any]) -> None:
        self._ok("onprem", self.connections["onprem"].add(dn, classes, attributes))

    def modify(self, dn: str, **attributes: str) -> None:
        changes = {k: [(ldap3.MODIFY_REPLACE, [v])] for k, v in attributes.items()}
        self._ok("onprem", self.connections["onprem"].modify(dn, changes))

    def show(self, side: str) -> list[str]:
        connection = self.connections[side]
        connection.search(
            self.roots[side],
            "(|(objectClass=user)(objectClass=group))",
            ldap3.SUBTREE,
            attributes=["objectClass", "cn", "title", "userAccountControl", "member"],
        )
        lines = []
        for entry in connection.response or []:
            if entry.get("type") != "searchResEntry":
                continue
            attrs = entry["attributes"]
            cn = first(attrs.get("cn"))
            if "group" in attrs["objectClass"]:
                lines.append(f"group {cn}: {len(attrs.get('member') or [])} members")
            else:
                disabled = int(first(attrs.get("userAccountControl")) or 512) & 2
                state = "disabled" if disabled else "enabled"
                lines.append(f"user {cn}: title={first(attrs.get('title'))} {state}")
        return sorted(lines)

    def close(self) -> None:
        for side, root in self.roots.items():
            self.connections[side].unbind()
            delete_subtree(self.settings[side], root)


def identity_demo(stack: StackSettings, run: str, work: Path) -> bool:
    say("== Identity: on-prem AD (corp, 127.0.0.2) → AWS Managed AD stand-in (aws, 127.0.0.3)")
    directories = Directories(stack, run)
    try:
        root = directories.roots["onprem"]
        people = [
            ("Ada Lovelace", "Engineer"),
            ("Émile Zola", "Writer"),
            ("Grace Hopper", "Admiral"),
        ]
        members = []
        for index, (name, title) in enumerate(people):
            dn = f"CN={name},{root}"
            directories.add(
                dn,
                ["user"],
                {
                    "sAMAccountName": f"d{run[-6:]}{index}",
                    "userAccountControl": "512",
                    "title": title,
                    "userPrincipalName": f"d{run[-6:]}{index}@corp.indutech.test",
                },
            )
            members.append(dn)
        directories.add(
            f"CN=Plant Operators,{root}",
            ["group"],
            {"sAMAccountName": f"g{run[-6:]}", "member": members},
        )
        say(f"   on-prem, written by hand under {root}:")
        for line in directories.show("onprem"):
            say(f"     {line}")

        mapping = (REPO_ROOT / "services/identity-sync/mapping.example.toml").read_text()
        mapping = re.sub(r'(?m)^onprem_root = ".*"', f'onprem_root = "{root}"', mapping)
        mapping = re.sub(
            r'(?m)^aws_root = ".*"', f'aws_root = "{directories.roots["aws"]}"', mapping
        )
        mapping_file = work / "mapping.toml"
        mapping_file.write_text(mapping)
        env = base_env()
        for side in ("ONPREM", "AWS"):
            for key in ("URL", "BIND_DN", "PASSWORD", "BASE_DN", "CA_FILE"):
                env[f"IDENTITY_SYNC_{side}__{key}"] = env[f"INDUTECH_AD_{side}__{key}"]
        env.update(
            {
                "IDENTITY_SYNC_MAPPING_FILE": str(mapping_file),
                "IDENTITY_SYNC_STATE_KEY": f"identity-sync/demo-{run}.json",
                "IDENTITY_SYNC_HEALTH__PORT": "0",
                "IDENTITY_SYNC_LOGGING__FORMAT": "console",
                "IDENTITY_SYNC_LOGGING__LEVEL": "WARNING",
            }
        )

        def sync(step: str) -> None:
            started = time.monotonic()
            subprocess.run(
                [str(BIN / "identity-sync"), "--once"], cwd=REPO_ROOT, env=env, check=True
            )
            say(f"   identity-sync --once ({step}): {time.monotonic() - started:.1f} s")

        sync("initial reconcile")
        say(f"   AWS side under {directories.roots['aws']}:")
        first = directories.show("aws")
        for line in first:
            say(f"     {line}")
        directories.modify(members[0], title="Chief Engineer")
        directories.modify(members[2], userAccountControl="514")
        say("   on-prem: Ada's title → Chief Engineer; Grace disabled")
        sync("change + disable")
        second = directories.show("aws")
        for line in second:
            say(f"     {line}")
        converged = second == directories.show("onprem")
        say(f"   both sides equal: {converged}")
        return converged
    finally:
        directories.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="demo_flows.py", description="Run the built flows on the local stack."
    )
    parser.add_argument("--seconds", type=float, default=15, help="how long the generator writes")
    parser.add_argument("--rate", type=float, default=1000, help="generated records/s")
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    stack = load_stack()
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    work = stack.stack_dir / "demo" / run
    work.mkdir(parents=True)
    say(f"demo run {run}: work files and worker logs in {work}\n")
    results = {"iot": iot_demo(stack, run, work, args.seconds, args.rate)}
    say("")
    results["identity"] = identity_demo(stack, run, work)
    say("")
    results["erp backup + warehouse"] = sql_demo(stack, run, work, base_env())
    say("")
    for name, ok in results.items():
        say(f"{name:<22} {'OK' if ok else 'FAILED'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
