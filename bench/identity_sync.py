"""identity-sync: the initial full sync of N users and groups against ldapadd of the same
LDIF into the same (AWS-side) DC, and the change propagation latency (p50/p99) of the
running worker in both directions, on the two local Samba DCs."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import ldap3

from bench.harness import Result, run_quiet, run_workers
from indutech_common.errors import DependencyUnavailableError
from indutech_common.ldap import ldap_connect
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import SIDES, IdentitySyncSettings, Side, load_mapping
from indutech_identity_sync.directory import DirectoryWriter
from indutech_identity_sync.engine import Reconciler
from indutech_identity_sync.model import make_dn
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.ldap import read_scope
from indutech_identity_sync.state import MemoryStateStore, SyncState
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.support.directory import delete_subtree
from tests.support.stack import StackSettings, load_stack

USERS = int(os.environ.get("BENCH_IDENTITY_USERS", "2000"))
GROUPS = USERS // 10
MEMBERS_PER_GROUP = 10  # every user in one group: the 10,000 users / 1,000 groups shape
CHANGES = 60
CHANGE_RATE_PER_S = 5.0  # the steady stream: one change every 200 ms, alternating sides
POLL_INTERVAL_S = 1.0  # the production default; change notifications wake it sooner
EXAMPLE = Path(__file__).resolve().parents[1] / "services/identity-sync/mapping.example.toml"
# the worker's default (IDENTITY_SYNC_WRITER_CONCURRENCY); BENCH_IDENTITY_WRITERS overrides it
WRITERS = int(
    os.environ.get(
        "BENCH_IDENTITY_WRITERS",
        str(IdentitySyncSettings.model_fields["writer_concurrency"].default),
    )
)


def _mapping_file(directory: Path, onprem_root: str, aws_root: str) -> Path:
    text = EXAMPLE.read_text()
    text = text.replace('"OU=InduTech,DC=corp,DC=indutech,DC=test"', f'"{onprem_root}"')
    text = text.replace('"OU=AWS,DC=aws,DC=indutech,DC=test"', f'"{aws_root}"')
    path = directory / "mapping.toml"
    path.write_text(text)
    return path


def _entries(tag: str, root: str) -> list[tuple[str, dict[str, Any]]]:
    """The same N users and G groups, as (DN, attributes) for ldap3 and for the LDIF."""
    out: list[tuple[str, dict[str, Any]]] = []
    users = []
    for i in range(USERS):
        dn = make_dn("CN", f"Bench User {i}", root)
        users.append(dn)
        out.append(
            (
                dn,
                {
                    "objectClass": ["top", "person", "organizationalPerson", "user"],
                    "sAMAccountName": f"b{tag}{i}",
                    "givenName": "Bench",
                    "sn": f"User {i}",
                    "mail": f"b{tag}{i}@indutech.test",
                    "department": f"Dept {i % 7}",
                    "title": "Operator",
                    "userAccountControl": "512",
                },
            )
        )
    for g in range(GROUPS):
        members = users[g * MEMBERS_PER_GROUP : (g + 1) * MEMBERS_PER_GROUP]
        out.append(
            (
                make_dn("CN", f"Bench Group {g}", root),
                {
                    "objectClass": ["top", "group"],
                    "sAMAccountName": f"g{tag}{g}",
                    "member": members,
                },
            )
        )
    return out


def _ldif(entries: list[tuple[str, dict[str, Any]]]) -> str:
    blocks = []
    for dn, attributes in entries:
        lines = [f"dn: {dn}"]
        for key, value in attributes.items():
            for v in value if isinstance(value, list) else [value]:
                lines.append(f"{key}: {v}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _ldapadd(settings: LdapSettings, ldif: Path, password_file: Path) -> float:
    env = {**os.environ, "LDAPTLS_CACERT": str(settings.ca_file), "LDAPTLS_REQCERT": "demand"}
    started = time.perf_counter()
    run_quiet(
        "ldapadd",
        "-x",
        "-H",
        settings.url,
        "-D",
        settings.bind_dn,
        "-y",
        str(password_file),
        "-f",
        str(ldif),
        env=env,
    )
    return time.perf_counter() - started


def _full_sync(
    stack: StackSettings, mapping_file: Path, connections: dict[Side, ldap3.Connection]
) -> float:
    """The worker's full cycle (read both scopes, plan, write with WRITERS connections per
    DC, as the worker holds them: opened before the clock starts)."""
    mapping = load_mapping(mapping_file)
    settings = {"onprem": stack.ad_onprem, "aws": stack.ad_aws}
    extra = {s: [ldap_connect(settings[s]) for _ in range(WRITERS - 1)] for s in SIDES}
    try:
        started = time.perf_counter()
        snapshots = {s: read_scope(connections[s], mapping, s) for s in SIDES}
        writers: dict[Side, DirectoryWriter] = {s: LdapWriter(connections[s]) for s in SIDES}
        pools: dict[Side, list[DirectoryWriter]] = {
            s: [writers[s], *(LdapWriter(c) for c in extra[s])] for s in SIDES
        }
        report = Reconciler(mapping, SyncState(), snapshots, writers, pools=pools).run()
        took = time.perf_counter() - started
    finally:
        for side in SIDES:
            for connection in extra[side]:
                connection.unbind()
    assert report.failed == 0, report
    assert report.deferred == 0, report
    assert report.writes["aws", "add"] == USERS + GROUPS, report.writes
    return took


async def _latencies(
    stack: StackSettings,
    mapping_file: Path,
    connections: dict[Side, ldap3.Connection],
    roots: dict[Side, str],
) -> list[float]:
    settings = IdentitySyncSettings(
        onprem=stack.ad_onprem,
        aws=stack.ad_aws,
        s3=stack.s3,
        mapping_file=mapping_file,
        poll_interval_s=POLL_INTERVAL_S,
        writer_concurrency=WRITERS,
        health={"host": "127.0.0.1", "port": 0},
    )
    worker = IdentitySyncWorker(settings, store=MemoryStateStore())
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    samples: list[float] = []
    try:
        for _ in range(1200):  # the initial full reconcile, at most a minute
            if worker.last_report is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # the echoes of the start-up cycle
        samples = await asyncio.to_thread(_stream, connections, roots)
    finally:
        worker.request_exit()
        await task
    return samples


def _stream(connections: dict[Side, ldap3.Connection], roots: dict[Side, str]) -> list[float]:
    """A steady stream: a change every 1/CHANGE_RATE_PER_S s, whatever is still in flight;
    between writes, every outstanding change is checked on the other side."""
    outstanding: list[tuple[float, Side, str, str]] = []  # (written at, target, DN, value)
    samples: list[float] = []
    next_change, i = time.perf_counter(), 0
    deadline = next_change + CHANGES / CHANGE_RATE_PER_S + 30
    while (i < CHANGES or outstanding) and time.perf_counter() < deadline:
        now = time.perf_counter()
        if i < CHANGES and now >= next_change:
            source: Side = "onprem" if i % 2 == 0 else "aws"
            target: Side = "aws" if source == "onprem" else "onprem"
            name = f"Bench User {i}"
            value = f"title-{i}-{uuid.uuid4().hex[:6]}"
            connections[source].modify(
                make_dn("CN", name, roots[source]), {"title": [(ldap3.MODIFY_REPLACE, [value])]}
            )
            outstanding.append(
                (time.perf_counter(), target, make_dn("CN", name, roots[target]), value)
            )
            next_change += 1 / CHANGE_RATE_PER_S
            i += 1
        for item in list(outstanding):
            written, target, dn, value = item
            if _has(connections[target], dn, value):
                samples.append(time.perf_counter() - written)
                outstanding.remove(item)
        time.sleep(0.005)
    if outstanding or len(samples) != CHANGES:
        raise RuntimeError(f"{len(outstanding)} changes never reached the other side")
    return samples


def _has(connection: ldap3.Connection, dn: str, value: str) -> bool:
    connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["title"])
    for entry in connection.response or []:
        if entry.get("type") == "searchResEntry":
            return [v.decode() for v in entry["raw_attributes"].get("title", [])] == [value]
    return False


def _clean_up(settings: LdapSettings, root: str) -> None:
    """Delete a bench OU; a DC too slow to finish (a tree delete of 11,000 objects can
    take Samba over 5 minutes) or gone costs a warning, never the measured results.
    ``BENCH_IDENTITY_CLEANUP=0`` leaves the OUs (before a ``make stack-reset``)."""
    if os.environ.get("BENCH_IDENTITY_CLEANUP", "1") == "0":
        print(f"left in place (BENCH_IDENTITY_CLEANUP=0): {root}")
        return
    try:
        delete_subtree(settings, root)
    except (ldap3.core.exceptions.LDAPException, DependencyUnavailableError, OSError) as exc:
        print(
            f"warning: cleanup of {root} did not finish ({type(exc).__name__}: {exc}); the DC "
            "goes on deleting in the background. `make stack-reset` gives fresh DCs."
        )


def run() -> list[Result]:
    stack = load_stack()
    tag = uuid.uuid4().hex[:6]
    roots: dict[Side, str] = {
        "onprem": f"OU=bench-{tag},OU=InduTech,{stack.ad_onprem.base_dn}",
        "aws": f"OU=bench-{tag},OU=AWS,{stack.ad_aws.base_dn}",
    }
    peer_root = f"OU=bench-ldapadd-{tag},OU=AWS,{stack.ad_aws.base_dn}"
    connections: dict[Side, ldap3.Connection] = {
        "onprem": ldap_connect(stack.ad_onprem),
        "aws": ldap_connect(stack.ad_aws),
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            for side in SIDES:
                connections[side].add(roots[side], ["organizationalUnit"])
            connections["aws"].add(peer_root, ["organizationalUnit"])
            seed = directory / "seed.ldif"
            seed.write_text(_ldif(_entries(tag, roots["onprem"])))
            seed_password = directory / "seed-password"
            seed_password.touch(mode=0o600)
            seed_password.write_text(stack.ad_onprem.password.get_secret_value())
            _ldapadd(stack.ad_onprem, seed, seed_password)  # the on-prem directory to copy
            mapping_file = _mapping_file(directory, roots["onprem"], roots["aws"])
            ours = _full_sync(stack, mapping_file, connections)

            ldif = directory / "peer.ldif"
            ldif.write_text(_ldif(_entries(f"p{tag}", peer_root)))
            password_file = directory / "password"
            password_file.touch(mode=0o600)
            password_file.write_text(stack.ad_aws.password.get_secret_value())
            peer = _ldapadd(stack.ad_aws, ldif, password_file)

            samples = run_workers(_latencies(stack, mapping_file, connections, roots))
    finally:
        for connection in connections.values():
            connection.unbind()
        for settings, root in (
            (stack.ad_onprem, roots["onprem"]),
            (stack.ad_aws, roots["aws"]),
            (stack.ad_aws, peer_root),
        ):
            _clean_up(settings, root)
    objects = USERS + GROUPS
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    scale = (
        "the issue's scale"
        if USERS >= 10_000
        else "the issue's 10,000 + 1,000 scaled down to keep the run short"
    )
    note = (
        f"{USERS} users + {GROUPS} groups x {MEMBERS_PER_GROUP} members ({scale}); ours reads "
        f"both scopes, plans and writes over LDAPS with {WRITERS} writer connection(s) per DC "
        "(writer_concurrency); peer: ldapadd of the same LDIF to the same (AWS) DC, which "
        "serves every connection from one process (Samba's single process model)"
    )
    latency_note = (
        f"{CHANGES} title changes at {CHANGE_RATE_PER_S:g}/s, alternating on-prem->AWS and "
        f"AWS->on-prem, on a {USERS + GROUPS}-object mirror; write to visible on the other DC; "
        "incremental cycles (DirSync / uSNChanged batch, woken by change notifications)"
    )
    return [
        Result(
            name="identity_sync_initial_full_sync",
            value=objects / ours,
            unit="objects/s",
            peer="ldapadd (same LDIF, same DC)",
            peer_value=objects / peer,
            notes=note,
        ),
        Result(
            name="identity_sync_propagation_p50",
            value=statistics.median(samples),
            unit="s",
            notes=latency_note,
        ),
        Result(name="identity_sync_propagation_p99", value=p99, unit="s", notes=latency_note),
    ]
