"""identity-sync's integration fixtures: a fresh pair of sub-OUs per test on the two DCs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest

from indutech_common.ldap import ldap_connect
from indutech_common.settings import LdapSettings
from indutech_identity_sync import initial_password
from indutech_identity_sync.config import SIDES, Mapping, Side, load_mapping
from indutech_identity_sync.directory import DirectoryWriter
from indutech_identity_sync.engine import CycleReport, Reconciler
from indutech_identity_sync.model import make_dn
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.ldap import close_quietly, read_scope
from indutech_identity_sync.state import SyncState
from tests.support.directory import TREE_DELETE, delete_subtree
from tests.support.stack import StackSettings

MAPPING_TOML = """
onprem_root = "{onprem_root}"
aws_root = "{aws_root}"
default_authority = "onprem"

[deletion_guard]
max_count = {max_count}
max_percent = {max_percent}
min_objects_for_percent = {min_objects_for_percent}
window_max_count = {window_max_count}
settle_s = {settle_s}

[attributes.sAMAccountName]
onprem = "sAMAccountName"
kinds = ["user", "group"]

[attributes.givenName]
onprem = "givenName"

[attributes.mail]
onprem = "mail"

[attributes.department]
onprem = "department"

[attributes.title]
onprem = "title"

[attributes.telephoneNumber]
onprem = "telephoneNumber"
authority = "aws"

[attributes.userPrincipalName]
onprem = "userPrincipalName"
transform = "suffix"
onprem_suffix = "@corp.indutech.test"
aws_suffix = "@aws.indutech.test"

[attributes.manager]
onprem = "manager"
transform = "dn"

[attributes.enabled]
onprem = "userAccountControl"
transform = "enabled"

[attributes.description]
onprem = "description"
kinds = ["ou", "user", "group"]
"""


class Live:
    """Two real DCs scoped to one test's sub-OUs, with the reconciler run in a thread."""

    def __init__(self, stack: StackSettings, unique: str, tmp_path: Path) -> None:
        self.unique = unique
        self.settings: dict[Side, LdapSettings] = {"onprem": stack.ad_onprem, "aws": stack.ad_aws}
        self.roots: dict[Side, str] = {
            "onprem": f"OU=isync-{unique},OU=InduTech,{stack.ad_onprem.base_dn}",
            "aws": f"OU=isync-{unique},OU=AWS,{stack.ad_aws.base_dn}",
        }
        self.mapping_file = tmp_path / "mapping.toml"
        self.write_mapping(max_count=50)
        self.connections: dict[Side, ldap3.Connection] = {}
        self.state = SyncState()
        self._sam = 0

    def write_mapping(
        self,
        *,
        max_count: int,
        window_max_count: int = 200,
        settle_s: float = 0.0,
        max_percent: float = 50.0,
        min_objects_for_percent: int = 1000,
    ) -> None:
        """The test mapping; no settle time unless asked (deletes go out with the cycle that
        sees them, as the tests of other behaviour expect)."""
        self.mapping_file.write_text(
            MAPPING_TOML.format(
                onprem_root=self.roots["onprem"],
                aws_root=self.roots["aws"],
                max_count=max_count,
                window_max_count=window_max_count,
                settle_s=settle_s,
                max_percent=max_percent,
                min_objects_for_percent=min_objects_for_percent,
            )
        )

    @property
    def mapping(self) -> Mapping:
        return load_mapping(self.mapping_file)

    def open(self) -> None:
        for side in SIDES:
            self.connections[side] = ldap_connect(self.settings[side])
            self.ok(side, self.connections[side].add(self.roots[side], ["organizationalUnit"]))

    def reconnect(self, side: Side) -> None:
        """A new connection to ``side`` (after its DC restarted)."""
        close_quietly(self.connections[side])  # the old socket died with the DC
        self.connections[side] = ldap_connect(self.settings[side])

    def names(self, side: Side) -> list[str]:
        """Every DN below the root (users, groups, OUs)."""
        c = self.connections[side]
        c.search(self.roots[side], "(objectClass=*)", ldap3.SUBTREE, attributes=["cn"])
        found = [e["dn"] for e in c.response or [] if e.get("type") == "searchResEntry"]
        return [dn for dn in found if dn.lower() != self.roots[side].lower()]

    def close(self) -> None:
        for side, connection in self.connections.items():
            close_quietly(connection)
            delete_subtree(self.settings[side], self.roots[side])

    def ok(self, side: Side, done: bool) -> None:
        assert done, self.connections[side].result

    # by-hand changes, as an administrator on one side
    def sam(self, prefix: str) -> str:
        self._sam += 1
        return f"{prefix}{self.unique[:8]}{self._sam}"

    def ou(self, side: Side, name: str, parent: str | None = None) -> str:
        dn = make_dn("OU", name, parent or self.roots[side])
        self.ok(side, self.connections[side].add(dn, ["organizationalUnit"]))
        return dn

    def user(self, side: Side, name: str, parent: str | None = None, **attrs: Any) -> str:
        dn = make_dn("CN", name, parent or self.roots[side])
        values = {"sAMAccountName": self.sam("u"), "userAccountControl": "512", **attrs}
        self.ok(side, self.connections[side].add(dn, ["user"], values))
        return dn

    def group(self, side: Side, name: str, members: list[str], parent: str | None = None) -> str:
        dn = make_dn("CN", name, parent or self.roots[side])
        values: dict[str, Any] = {"sAMAccountName": self.sam("g")}
        if members:
            values["member"] = members
        self.ok(side, self.connections[side].add(dn, ["group"], values))
        return dn

    def assign(self, side: Side, dn: str, **attrs: str) -> None:
        changes = {k: [(ldap3.MODIFY_REPLACE, [v] if v else [])] for k, v in attrs.items()}
        self.ok(side, self.connections[side].modify(dn, changes))

    def members(self, side: Side, group: str, add: list[str], remove: list[str]) -> None:
        c = self.connections[side]
        if add:
            self.ok(side, c.modify(group, {"member": [(ldap3.MODIFY_ADD, add)]}))
        if remove:
            self.ok(side, c.modify(group, {"member": [(ldap3.MODIFY_DELETE, remove)]}))

    def rename(self, side: Side, dn: str, new_rdn: str, new_parent: str) -> str:
        self.ok(side, self.connections[side].modify_dn(dn, new_rdn, new_superior=new_parent))
        return f"{new_rdn},{new_parent}"

    def delete(self, side: Side, dn: str) -> None:
        self.ok(side, self.connections[side].delete(dn, controls=TREE_DELETE))

    def twin(self, dn: str, side: Side) -> str:
        """The DN ``dn`` (from the other side) should have on ``side``."""
        source = self.roots["aws" if side == "onprem" else "onprem"]
        assert dn.endswith(source)
        return dn[: -len(source)] + self.roots[side]

    def read(self, side: Side, dn: str, attribute: str) -> list[str]:
        c = self.connections[side]
        c.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[attribute])
        entries = [e for e in c.response or [] if e.get("type") == "searchResEntry"]
        assert entries, f"{dn} not found on {side}"
        return [v.decode() for v in entries[0]["raw_attributes"].get(attribute, [])]

    def exists(self, side: Side, dn: str) -> bool:
        c = self.connections[side]
        c.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["objectGUID"])
        return any(e.get("type") == "searchResEntry" for e in c.response or [])

    def count(self, side: Side, search_filter: str = "(objectClass=user)") -> int:
        c = self.connections[side]
        c.search(self.roots[side], search_filter, ldap3.SUBTREE, attributes=["objectGUID"])
        return sum(e.get("type") == "searchResEntry" for e in c.response or [])

    def sync(
        self,
        *,
        allow_mass_delete: bool = False,
        writers: int = 1,
        password: Callable[[Iterable[str]], str] = initial_password.generate,
    ) -> CycleReport:
        """One full cycle; ``writers`` > 1: that many connections per DC write concurrently
        (the worker's ``writer_concurrency``); ``password``: the writers' initial passwords."""
        mapping = self.mapping
        snapshots = {s: read_scope(self.connections[s], mapping, s) for s in SIDES}
        primary: dict[Side, DirectoryWriter] = {
            s: LdapWriter(self.connections[s], password=password) for s in SIDES
        }
        extra = {s: [ldap_connect(self.settings[s]) for _ in range(writers - 1)] for s in SIDES}
        pools: dict[Side, list[DirectoryWriter]] = {
            s: [primary[s], *(LdapWriter(c, password=password) for c in extra[s])] for s in SIDES
        }
        try:
            return Reconciler(
                mapping,
                self.state,
                snapshots,
                primary,
                allow_mass_delete=allow_mass_delete,
                pools=pools,
            ).run()
        finally:
            for connections in extra.values():
                for connection in connections:
                    close_quietly(connection)


@pytest.fixture
def live(stack: StackSettings, unique: str, tmp_path: Path) -> Iterator[Live]:
    """Sub-OUs isync-<unique> under OU=InduTech and OU=AWS, deleted (tree) afterwards."""
    pair = Live(stack, unique, tmp_path)
    pair.open()
    try:
        yield pair
    finally:
        pair.close()
