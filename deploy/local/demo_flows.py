"""`make demo`: the built flows, end to end on the local stack with generated data.

IoT: ``python -m indutech_devtools.iot`` writes SAN files (JSON Lines, CSV, gzip-rotated)
while ``iot-ingest`` and ``iot-to-s3`` run as real processes; the demo waits
until every generated record is in the lake exactly once and says so.
Identity: a small on-prem OU with users and a group is synced to the AWS side
by ``identity-sync --once``, then a change and a disable follow it across.

Each run uses its own topics, lake prefix and OUs (``demo-<run>``), so runs
never see each other's data; the OUs are removed at the end.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ldap3
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from dotenv import dotenv_values

from demo_sql import sql_demo
from indutech_common.ldap import ldap_connect
from indutech_common.logging import configure_logging
from indutech_common.schemas import Topics
from tests.support.directory import delete_subtree
from tests.support.kafka import create_topics, delete_topics
from tests.support.stack import REPO_ROOT, StackSettings, load_stack, stack_env_file

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
    prefixes = ("INDUTECH_", "IOT_INGEST_", "IOT_TO_S3_", "IDENTITY_SYNC_", "SQL_BACKUP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None})
    env.update({"PYTHONUNBUFFERED": "1", "INDUTECH_LOGGING__FORMAT": "json"})
    return env


def metric(port: int, name: str) -> float | None:
    """Sum of one Prometheus counter over its labels; None while the worker is starting."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


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


def stop(name: str, process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    say(f"   {name}: SIGTERM → drained and exited {code}")


def iot_demo(stack: StackSettings, run: str, work: Path, seconds: float, rate: float) -> bool:
    say("== IoT: generator → SAN files → iot-ingest → Kafka (exactly-once) → iot-to-s3 → lake")
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
    say(f"   iot-ingest (pid {ingest.pid}) watches {san}; logs {work}/iot-ingest.log")
    say(f"   iot-to-s3 (pid {to_s3.pid}) writes s3://{stack.s3.lake_bucket}/{prefix}")
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
            *("--duration", str(seconds), "--rotate-every", "2000", "--gzip", "--start", "now"),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
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
            produced = metric(18181, "indutech_records_out_total")
            target = "…" if expected is None else str(expected)
            sent = "starting" if produced is None else f"{produced:.0f}"
            say(
                f"   progress: {sent}/{target} records sent to Kafka, "
                f"{rows}/{target} in the lake ({objects} Parquet objects)"
            )
            if expected is not None and rows >= expected:
                break
            time.sleep(3)
    finally:
        if generator.poll() is None:
            generator.kill()
        stop("iot-ingest", ingest)
        stop("iot-to-s3", to_s3)
        asyncio.run(delete_topics(stack.kafka, list(topics.contract)))
    exact = expected is not None and rows == expected == distinct
    verdict = "exactly once" if exact else "MISMATCH (see the logs above)"
    say(f"   lake: {rows} rows, {distinct} distinct event ids for {expected} generated: {verdict}")
    return exact


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
    results["erp backup"] = sql_demo(stack, run, work, base_env())
    say("")
    for name, ok in results.items():
        say(f"{name:<9} {'OK' if ok else 'FAILED'}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
