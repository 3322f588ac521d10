"""A worker's Kafka ACLs (deploy/compose/redpanda/init.sh) enforced by the stack's broker.

The native Kafka runs the StandardAuthorizer with the stack's own users as superusers
(deploy/local/components/kafka.sh). A test gives a worker a SCRAM user of its own with only
the ``allow`` lines init.sh gives that worker on Redpanda — the same ACL model — its
contract topics, group and transactional ids renamed to the test's. A right the flow needs
and the ACLs lack stops the flow with an authorization error; the tests then try a
neighbour's resource and expect a refusal.

The users and ACLs are made over the loopback PLAINTEXT listener (a superuser there) with
confluent-kafka's admin client (a dev dependency: aiokafka's admin has neither ACLs nor
SCRAM users).
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in its stubs
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_common.settings import KafkaSettings
from tests.support.stack import REPO_ROOT, StackSettings

INIT = REPO_ROOT / "deploy" / "compose" / "redpanda" / "init.sh"
RESOURCES = {
    "--topic": ResourceType.TOPIC,
    "--group": ResourceType.GROUP,
    "--transactional-id": ResourceType.TRANSACTIONAL_ID,
}
CLUSTER = "kafka-cluster"


@dataclass(frozen=True)
class Grant:
    """One ACL of init.sh: ``operation`` on a resource, for ``user``."""

    user: str
    operation: str
    resource: ResourceType
    name: str
    prefixed: bool


def init_grants() -> list[Grant]:
    """Every ACL init.sh creates, its variables expanded (the cluster-wide
    idempotent_write of its loop included)."""
    text = INIT.read_text()
    variables = dict(re.findall(r"^([A-Z]+)=(\S+)$", text, flags=re.MULTILINE))
    (users,) = re.findall(r"^USERS=\(([^)]*)\)", text, flags=re.MULTILINE)
    grants: list[Grant] = []
    for raw in text.splitlines():
        line = raw.strip()
        loop = re.fullmatch(r'\[\[ \$user == (\S+) \]\] \|\| allow "\$user" (\S+) --cluster', line)
        if loop:
            grants += [
                Grant(user, loop[2], ResourceType.BROKER, CLUSTER, prefixed=False)
                for user in users.split()
                if user != loop[1]
            ]
            continue
        if not line.startswith("allow "):
            continue
        words = shlex.split(re.sub(r'"\$([A-Z]+)"', lambda m: variables[m[1]], line))
        user, operations, flags = words[1], words[2].split(","), words[3:]
        prefixed = "prefixed" in flags
        targets: list[tuple[ResourceType, str]] = []
        for i, flag in enumerate(flags):
            if flag in RESOURCES:
                targets.append((RESOURCES[flag], flags[i + 1]))
            elif flag == "--cluster":
                targets.append((ResourceType.BROKER, CLUSTER))
        grants += [
            Grant(user, operation, resource, name, prefixed)
            for operation in operations
            for resource, name in targets
        ]
    return grants


@dataclass(frozen=True)
class KafkaUser:
    name: str
    password: str

    def settings(self, base: KafkaSettings) -> KafkaSettings:
        """``base`` (the stack's broker, TLS and mechanism) logged in as this user."""
        return base.model_copy(update={"username": self.name, "password": SecretStr(self.password)})


async def assert_read_refused(kafka: KafkaSettings, topic: str, group_id: str | None) -> None:
    """A consumer with ``kafka``'s credentials is refused ``topic`` (the ACLs are in force:
    a test on them cannot pass with a user that may do everything)."""
    reader = create_consumer(kafka, topic, group_id=group_id)
    await start_client(reader, kafka)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await reader.getmany(timeout_ms=10_000)
    finally:
        await stop_client(reader)


def _admin(stack: StackSettings) -> AdminClient:
    return AdminClient({"bootstrap.servers": stack.kafka_plaintext_bootstrap})


def _binding(principal: str, grant: Grant, name: str) -> AclBinding:
    return AclBinding(
        grant.resource,
        name,
        ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
        f"User:{principal}",
        "*",
        AclOperation[grant.operation.upper()],
        AclPermissionType.ALLOW,
    )


@contextmanager
def worker_kafka_user(
    stack: StackSettings, worker: str, principal: str, names: Mapping[str, str]
) -> Iterator[KafkaUser]:
    """A SCRAM user ``principal`` with ``worker``'s ACLs of init.sh, each resource name in
    ``names`` renamed (contract topic → the test's topic, group, transactional-id prefix);
    the ACLs removed after, the user kept (see the end)."""
    admin = _admin(stack)
    user = KafkaUser(principal, secrets.token_hex(16))
    bindings = [
        _binding(principal, grant, names.get(grant.name, grant.name))
        for grant in init_grants()
        if grant.user == worker
    ]
    if not bindings:
        raise ValueError(f"deploy/compose/redpanda/init.sh grants {worker} nothing")
    credential = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    upsert = UserScramCredentialUpsertion(principal, credential, user.password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
    try:
        for future in admin.create_acls(bindings).values():
            future.result(timeout=30)
        yield user
    finally:
        # None: any name, any host (the filter's documented wildcards; its hints say str)
        everything = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]
            ResourcePatternType.ANY,
            f"User:{principal}",
            None,  # type: ignore[arg-type]
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        for future in admin.delete_acls([everything]).values():
            future.result(timeout=30)
        # The SCRAM user stays (its name is the test's own, its ACLs are gone): Kafka 3.9.2
        # replaying a user's removal together with other users' creations at a restart
        # drops every SCRAM credential, the stack's own too. Seen in CI after the
        # broker-restart test; reproduced on a fresh stack (create, remove, restart).
