"""identity-sync: the initial full sync of N users and groups against ldapadd of the same
LDIF into the same (AWS-side) DC, and the change propagation latency (p50/p99) of the
running worker in both directions, on the two local Samba DCs.

Full sync, like with like: the peer is ``writer_concurrency`` ldapadd processes over the
same LDIF split that many ways (each part self-contained: its users, then the groups that
list them), ours the worker's full cycle with that many writer connections per DC; each
round writes both into fresh OUs, the order alternating round by round. Both are timed
from before the first TLS connection is opened (ldapadd: before the processes start) to
the last write answered, so both include the TLS handshakes and binds; ldapadd's process
starts are included too (ours runs in this process: no interpreter start), and the cost
of one ldapadd process that adds nothing is measured and reported beside it.

Latency: both sides seeded with the same entries (parallel ldapadd, untimed), then per run
a fresh worker with its own S3 state (the production store) adopts them in its start-up
cycle and a steady stream of title changes is timed from the write to visible on the
other DC. ``BENCH_IDENTITY_LATENCY_ROOTS=<on-prem OU DN>|<AWS OU DN>`` reuses OUs seeded by
an earlier run (with ``BENCH_IDENTITY_CLEANUP=0``) instead of seeding new ones.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import ldap3

from bench.harness import Result, run_workers
from indutech_common.errors import DependencyUnavailableError
from indutech_common.ldap import ldap_connect
from indutech_common.s3 import JsonObjectStore, create_s3_client
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import SIDES, IdentitySyncSettings, Side, load_mapping
from indutech_identity_sync.directory import DirectoryWriter
from indutech_identity_sync.engine import Reconciler
from indutech_identity_sync.model import make_dn
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.ldap import read_scope
from indutech_identity_sync.state import SyncState
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.support.directory import delete_subtree
from tests.support.stack import StackSettings, load_stack

USERS = int(os.environ.get("BENCH_IDENTITY_USERS", "2000"))  # the latency runs' directory
GROUPS = USERS // 10
# the full-sync rounds' directory (default: the same); 11,000 objects x 2 sides x 3 rounds
# is over an hour of adds on this machine's DCs
FULL_SYNC_USERS = int(os.environ.get("BENCH_IDENTITY_FULL_SYNC_USERS", str(USERS)))
ROUNDS = int(os.environ.get("BENCH_IDENTITY_ROUNDS", "3"))  # full sync, alternating order
RUNS = int(os.environ.get("BENCH_IDENTITY_LATENCY_RUNS", "3"))  # latency streams
# which parts to run: "full-sync", "latency" or both (comma-separated)
PARTS = set(os.environ.get("BENCH_IDENTITY_PARTS", "full-sync,latency").split(","))
MEMBERS_PER_GROUP = 10  # every user in one group: the 10,000 users / 1,000 groups shape
CHANGES = 60
CHANGE_RATE_PER_S = 5.0  # the steady stream: one change every 200 ms, alternating sides
# the worker's defaults: poll (changes wake it sooner) and writer connections
POLL_INTERVAL_S = float(IdentitySyncSettings.model_fields["poll_interval_s"].default)
EXAMPLE = Path(__file__).resolve().parents[1] / "services/identity-sync/mapping.example.toml"
# the worker's default (IDENTITY_SYNC_WRITER_CONCURRENCY); BENCH_IDENTITY_WRITERS overrides it
WRITERS = int(
    os.environ.get(
        "BENCH_IDENTITY_WRITERS",
        str(IdentitySyncSettings.model_fields["writer_concurrency"].default),
    )
)
DETECTION = ""  # how changes were detected (the settings of the last run; IDENTITY_SYNC_*)
STARTUP_TIMEOUT_S = 900.0  # the start-up full cycle at 11,000 objects per side

Entry = tuple[str, dict[str, Any]]


def _mapping_file(directory: Path, onprem_root: str, aws_root: str) -> Path:
    text = EXAMPLE.read_text()
    text = text.replace('"OU=InduTech,DC=corp,DC=indutech,DC=test"', f'"{onprem_root}"')
    text = text.replace('"OU=AWS,DC=aws,DC=indutech,DC=test"', f'"{aws_root}"')
    path = directory / "mapping.toml"
    path.write_text(text)
    return path


def _entries(tag: str, root: str, users: int) -> list[list[Entry]]:
    """``users`` users and users/10 groups as (DN, attributes) for ldap3 and for the LDIF,
    in blocks: one group and the users it lists (so any run of blocks is self-contained)."""
    blocks: list[list[Entry]] = []
    for g in range(users // MEMBERS_PER_GROUP):
        block: list[Entry] = []
        for i in range(g * MEMBERS_PER_GROUP, (g + 1) * MEMBERS_PER_GROUP):
            block.append(
                (
                    make_dn("CN", f"Bench User {i}", root),
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
        block.append(
            (
                make_dn("CN", f"Bench Group {g}", root),
                {
                    "objectClass": ["top", "group"],
                    "sAMAccountName": f"g{tag}{g}",
                    "member": [dn for dn, _ in block],
                },
            )
        )
        blocks.append(block)
    return blocks


def _split(blocks: list[list[Entry]], ways: int) -> list[list[Entry]]:
    """The LDIF split ``ways`` ways by consecutive blocks: each part its users, then the
    groups listing them, so each part can be added on its own, in parallel with the others."""
    size = -(-len(blocks) // ways)
    parts = [blocks[i : i + size] for i in range(0, len(blocks), size)]
    return [
        [e for block in part for e in block if "group" not in e[1]["objectClass"]]
        + [e for block in part for e in block if "group" in e[1]["objectClass"]]
        for part in parts
    ]


def _ldif(entries: list[tuple[str, dict[str, Any]]]) -> str:
    blocks = []
    for dn, attributes in entries:
        lines = [f"dn: {dn}"]
        for key, value in attributes.items():
            for v in value if isinstance(value, list) else [value]:
                lines.append(f"{key}: {v}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _ldapadd_parallel(
    settings: LdapSettings, parts: Sequence[Sequence[Entry]], directory: Path
) -> float:
    """One ldapadd process per part, all at once; seconds from before the first process
    starts to the last one's exit (process starts, TLS handshakes and binds included)."""
    password_file = directory / f"password-{uuid.uuid4().hex[:6]}"
    password_file.touch(mode=0o600)
    password_file.write_text(settings.password.get_secret_value())
    files = []
    for i, part in enumerate(parts):
        ldif = directory / f"part-{uuid.uuid4().hex[:6]}-{i}.ldif"
        ldif.write_text(_ldif(list(part)) if part else "")
        files.append(ldif)
    env = {**os.environ, "LDAPTLS_CACERT": str(settings.ca_file), "LDAPTLS_REQCERT": "demand"}
    command = ["ldapadd", "-x", "-H", settings.url, "-D", settings.bind_dn, "-y"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*command, str(password_file), "-f", str(ldif)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ldif in files
    ]
    errors = [p.communicate(timeout=3600)[1] for p in processes]
    took = time.perf_counter() - started
    for process, error in zip(processes, errors, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"ldapadd failed ({process.returncode}):\n{error[-2000:]}")
    return took


def _ldapadd_overhead(settings: LdapSettings, directory: Path) -> float:
    """The fixed cost of one ldapadd process (start, TLS handshake, bind, nothing added)."""
    return min(_ldapadd_parallel(settings, [[]], directory) for _ in range(3))


def _full_sync(stack: StackSettings, mapping_file: Path, objects: int) -> float:
    """The worker's full cycle: open the connections (TLS, bind; 1 + WRITERS - 1 per DC, as
    the worker holds them), read both scopes, plan, write; seconds for all of it."""
    mapping = load_mapping(mapping_file)
    settings = {"onprem": stack.ad_onprem, "aws": stack.ad_aws}
    opened: dict[Side, list[ldap3.Connection]] = {s: [] for s in SIDES}
    try:
        started = time.perf_counter()
        for side in SIDES:
            opened[side] = [ldap_connect(settings[side]) for _ in range(WRITERS)]
        snapshots = {s: read_scope(opened[s][0], mapping, s) for s in SIDES}
        writers: dict[Side, DirectoryWriter] = {s: LdapWriter(opened[s][0]) for s in SIDES}
        pools: dict[Side, list[DirectoryWriter]] = {
            s: [writers[s], *(LdapWriter(c) for c in opened[s][1:])] for s in SIDES
        }
        report = Reconciler(mapping, SyncState(), snapshots, writers, pools=pools).run()
        took = time.perf_counter() - started
    finally:
        for side in SIDES:
            for connection in opened[side]:
                connection.unbind()
    if report.failed or report.deferred or report.writes["aws", "add"] != objects:
        raise RuntimeError(
            f"the full sync did not copy every object: {report.failed} failed, "
            f"{report.deferred} deferred, writes {dict(report.writes)}"
        )
    return took


def _full_sync_rounds(
    stack: StackSettings, tag: str, directory: Path, made: list[tuple[LdapSettings, str]]
) -> tuple[list[float], list[float], float]:
    """ROUNDS rounds of (ours, peer) into fresh AWS OUs, the order alternating; returns the
    seconds of ours and of the peer per round, and one idle ldapadd's cost. Each round of
    ours copies an on-prem OU of its own (seeded untimed): account names are unique per
    domain, so a second copy of the same users into the AWS domain would collide."""
    users = FULL_SYNC_USERS
    objects = users + users // MEMBERS_PER_GROUP
    ours: list[float] = []
    peer: list[float] = []
    for round_ in range(ROUNDS):
        order = ("ours", "peer") if round_ % 2 == 0 else ("peer", "ours")
        for who in order:
            root = f"OU=bench-{who}{round_}-{tag},OU=AWS,{stack.ad_aws.base_dn}"
            if who == "ours":
                source = f"OU=bench-fs{round_}-{tag},OU=InduTech,{stack.ad_onprem.base_dn}"
                _add_ou(stack.ad_onprem, source)
                made.append((stack.ad_onprem, source))
                blocks = _entries(f"o{round_}{tag}", source, users)
                _ldapadd_parallel(stack.ad_onprem, _split(blocks, WRITERS), directory)
            _add_ou(stack.ad_aws, root)
            made.append((stack.ad_aws, root))
            if who == "ours":
                took = _full_sync(stack, _mapping_file(directory, source, root), objects)
                ours.append(took)
            else:
                parts = _split(_entries(f"p{round_}{tag}", root, users), WRITERS)
                took = _ldapadd_parallel(stack.ad_aws, parts, directory)
                peer.append(took)
            print(f"   full sync round {round_ + 1} {who}: {objects / took:.1f} objects/s")
    return ours, peer, _ldapadd_overhead(stack.ad_aws, directory)


def _add_ou(settings: LdapSettings, dn: str) -> None:
    connection = ldap_connect(settings)
    try:
        if not connection.add(dn, ["organizationalUnit"]):
            raise RuntimeError(f"cannot create {dn}: {connection.result}")
    finally:
        connection.unbind()


def _seed_pair(
    stack: StackSettings, tag: str, directory: Path, made: list[tuple[LdapSettings, str]]
) -> dict[Side, str]:
    """Both sides hold the same USERS users and groups (untimed): in sync from the start."""
    roots: dict[Side, str] = {
        "onprem": f"OU=bench-lat-{tag},OU=InduTech,{stack.ad_onprem.base_dn}",
        "aws": f"OU=bench-lat-{tag},OU=AWS,{stack.ad_aws.base_dn}",
    }
    settings = {"onprem": stack.ad_onprem, "aws": stack.ad_aws}
    for side in SIDES:
        _add_ou(settings[side], roots[side])
        made.append((settings[side], roots[side]))
    with ThreadPool(2) as pool:  # the two DCs are two processes: seed both at once
        pool.map(
            lambda side: _ldapadd_parallel(
                settings[side], _split(_entries(tag, roots[side], USERS), WRITERS), directory
            ),
            SIDES,
        )
    return roots


async def _latencies(
    stack: StackSettings,
    mapping_file: Path,
    connections: dict[Side, ldap3.Connection],
    roots: dict[Side, str],
    state_key: str,
) -> tuple[list[float], float]:
    """One run: a fresh worker (its own S3 state) adopts both sides, then the stream;
    returns the samples and the seconds of the start-up cycle."""
    settings = IdentitySyncSettings(
        onprem=stack.ad_onprem,
        aws=stack.ad_aws,
        s3=stack.s3,
        mapping_file=mapping_file,
        state_bucket=stack.s3.backup_bucket,
        state_key=state_key,
        poll_interval_s=POLL_INTERVAL_S,
        writer_concurrency=WRITERS,
        health={"host": "127.0.0.1", "port": 0},
    )
    global DETECTION  # noqa: PLW0603 - the notes name the settings the runs used
    DETECTION = (
        f"the USN probe every {settings.probe_interval_s:g} s (lookups up to "
        f"{settings.usn_lookup_max} USNs), change notifications "
        f"{'on' if settings.change_notifications else 'off'}"
    )
    worker = IdentitySyncWorker(settings)
    started = time.perf_counter()
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    samples: list[float] = []
    try:
        while worker.last_report is None and not task.done():
            if time.perf_counter() - started > STARTUP_TIMEOUT_S:
                raise RuntimeError("the start-up cycle did not finish")
            await asyncio.sleep(0.05)
        if task.done():
            raise RuntimeError(f"the worker stopped: {task.result()}")
        startup = time.perf_counter() - started
        await asyncio.sleep(2.0)  # the echoes of the start-up cycle
        samples = await asyncio.to_thread(_stream, connections, roots)
    finally:
        worker.request_exit()
        await task
        async with create_s3_client(stack.s3) as client:
            objects = JsonObjectStore(client, bucket=stack.s3.backup_bucket)
            for key in await objects.list_keys(state_key):
                await objects.delete(key)
    return samples, startup


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _spread(values: list[float], unit: str = "") -> str:
    return (
        f"min {min(values):.3g}{unit} / median {statistics.median(values):.3g}{unit} / "
        f"max {max(values):.3g}{unit}"
    )


def _stream(connections: dict[Side, ldap3.Connection], roots: dict[Side, str]) -> list[float]:
    """A steady stream: a change every 1/CHANGE_RATE_PER_S s, whatever is still in flight;
    between writes, every outstanding change is checked on the other side."""
    outstanding: list[tuple[float, Side, str, str]] = []  # (written at, target, DN, value)
    samples: list[float] = []
    next_change, i = time.perf_counter(), 0
    last_write = next_change
    # each change has 30 s to arrive (from the last write: a loaded DC slows the writes too)
    while (i < CHANGES or outstanding) and time.perf_counter() < last_write + 30:
        now = time.perf_counter()
        if i < CHANGES and now >= next_change:
            source: Side = "onprem" if i % 2 == 0 else "aws"
            target: Side = "aws" if source == "onprem" else "onprem"
            name = f"Bench User {i}"
            value = f"title-{i}-{uuid.uuid4().hex[:6]}"
            connections[source].modify(
                make_dn("CN", name, roots[source]), {"title": [(ldap3.MODIFY_REPLACE, [value])]}
            )
            last_write = time.perf_counter()
            outstanding.append((last_write, target, make_dn("CN", name, roots[target]), value))
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
    made: list[tuple[LdapSettings, str]] = []  # OUs to delete at the end
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            if "full-sync" in PARTS:
                ours, peer, overhead = _full_sync_rounds(stack, tag, directory, made)
                results.append(_full_sync_result(ours, peer, overhead))
            if "latency" in PARTS:
                results += _latency_results(stack, tag, directory, made)
    finally:
        for settings, root in made:
            _clean_up(settings, root)
    return results


def _full_sync_result(ours: list[float], peer: list[float], overhead: float) -> Result:
    objects = FULL_SYNC_USERS + FULL_SYNC_USERS // MEMBERS_PER_GROUP
    ours_rate = [objects / t for t in ours]
    peer_rate = [objects / t for t in peer]
    scale = "the issue's scale" if FULL_SYNC_USERS >= 10_000 else "scaled down to keep it short"
    return Result(
        name="identity_sync_initial_full_sync",
        value=statistics.median(ours_rate),
        unit="objects/s",
        peer=f"ldapadd x {WRITERS} processes (same LDIF split {WRITERS} ways, same DC)",
        peer_value=statistics.median(peer_rate),
        notes=(
            f"{FULL_SYNC_USERS} users + {FULL_SYNC_USERS // MEMBERS_PER_GROUP} groups x "
            f"{MEMBERS_PER_GROUP} members ({scale}); {len(ours)} rounds on fresh OUs, the order "
            f"alternating; ours {_spread(ours_rate)} objects/s: opens {WRITERS} LDAPS "
            "connection(s) per DC (writer_concurrency), reads both scopes, plans, writes (a "
            f"random initial password in each user add); peer {_spread(peer_rate)} objects/s: "
            f"{WRITERS} ldapadd processes at once, each adding its part's users then the groups "
            "listing them (no password). Both timed from before the first TLS connection to "
            "the last write, so both include the TLS handshakes and binds; ldapadd's process "
            f"starts are included too (one ldapadd adding nothing: {overhead * 1000:.0f} ms); "
            "the AWS DC serves every connection from one process (Samba's single process "
            "model); 2 cores shared with other agents' work"
        ),
    )


def _latency_results(
    stack: StackSettings, tag: str, directory: Path, made: list[tuple[LdapSettings, str]]
) -> list[Result]:
    reuse = os.environ.get("BENCH_IDENTITY_LATENCY_ROOTS")
    if reuse:
        onprem_root, aws_root = reuse.split("|")
        roots: dict[Side, str] = {"onprem": onprem_root, "aws": aws_root}
    else:
        roots = _seed_pair(stack, tag, directory, made)
        print(f"   seeded: {roots['onprem']}|{roots['aws']}")
    mapping_file = _mapping_file(directory, roots["onprem"], roots["aws"])
    connections: dict[Side, ldap3.Connection] = {
        "onprem": ldap_connect(stack.ad_onprem),
        "aws": ldap_connect(stack.ad_aws),
    }
    p50s: list[float] = []
    p99s: list[float] = []
    try:
        for run_ in range(RUNS):
            key = f"identity-sync-bench/{tag}/{run_}/state.json"
            samples, startup = run_workers(_latencies(stack, mapping_file, connections, roots, key))
            p50s.append(statistics.median(samples))
            p99s.append(_percentile(samples, 0.99))
            print(
                f"   latency run {run_ + 1}: p50 {p50s[-1]:.3f} s, p99 {p99s[-1]:.3f} s, "
                f"max {max(samples):.3f} s (start-up cycle {startup:.1f} s)"
            )
    finally:
        for connection in connections.values():
            connection.unbind()
    objects = USERS + GROUPS
    note = (
        f"{CHANGES} title changes at {CHANGE_RATE_PER_S:g}/s, alternating on-prem->AWS and "
        f"AWS->on-prem, on a {objects}-object directory per side (both seeded alike, adopted "
        f"by the worker's start-up cycle); write to visible on the other DC; {RUNS} runs, "
        "each a fresh worker with its state in S3 (the production store), incremental "
        f"cycles woken by {DETECTION}, poll {POLL_INTERVAL_S:g} s, {WRITERS} writer "
        "connection(s) per DC; 2 cores shared with other agents' work"
    )
    return [
        Result(
            name="identity_sync_propagation_p50",
            value=statistics.median(p50s),
            unit="s",
            notes=f"median of the runs' p50, {_spread(p50s, ' s')}; {note}",
        ),
        Result(
            name="identity_sync_propagation_p99",
            value=statistics.median(p99s),
            unit="s",
            notes=f"median of the runs' p99, {_spread(p99s, ' s')}; {note}",
        ),
    ]
