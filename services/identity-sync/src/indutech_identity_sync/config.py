"""Settings (environment, prefix ``IDENTITY_SYNC_``) and the mapping rules (a TOML file).

The mapping is TOML, read with the standard library's ``tomllib``: no extra
dependency, and TOML has none of YAML's implicit typing (``no`` read as a
boolean, ``010`` as octal) that would silently change an attribute value or a
DN. The file is validated by pydantic; a bad field stops the worker at start.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from indutech_common.schemas.topics import Topics
from indutech_common.settings import KafkaSettings, LdapSettings, S3Settings, WorkerSettings
from indutech_identity_sync.errors import MappingError

Side = Literal["onprem", "aws"]
Kind = Literal["ou", "user", "group"]
SIDES: tuple[Side, Side] = ("onprem", "aws")
KINDS: tuple[Kind, ...] = ("ou", "user", "group")
# Secrets AD keeps on users, computers and service accounts: never read, never written (the
# mapping refuses them, the LDAP writer refuses them again). Compared case-insensitively and
# without attribute options (``userPassword;binary``).
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "unicodepwd",
        "userpassword",
        "dbcspwd",
        "ntpwdhistory",
        "lmpwdhistory",
        "supplementalcredentials",
        "unixuserpassword",
        "mssfu30password",
        "ms-mcs-admpwd",  # legacy LAPS
        "msds-managedpassword",  # gMSA password blob
    }
)
# Windows LAPS (msLAPS-Password, msLAPS-EncryptedPassword, ...) and the gMSA password family
FORBIDDEN_PREFIXES = ("mslaps-", "msds-managedpassword")


def is_secret_attribute(name: str) -> bool:
    """True for an attribute that holds a password or another secret (never synced)."""
    base = name.split(";", 1)[0].strip().lower()
    return base in FORBIDDEN_ATTRIBUTES or base.startswith(FORBIDDEN_PREFIXES)


def other(side: Side) -> Side:
    return "aws" if side == "onprem" else "onprem"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeRule(_Model):
    """One synced attribute: its name on each side, how values translate, who wins a conflict."""

    onprem: str = Field(description="LDAP attribute name on the on-prem DC")
    aws: str | None = Field(default=None, description="name on the AWS DC (default: same)")
    kinds: tuple[Kind, ...] = ("user",)
    transform: Literal["none", "dn", "enabled", "suffix"] = Field(
        default="none",
        description="dn: a DN-valued reference translated through the anchors; enabled: "
        "userAccountControl's ACCOUNTDISABLE bit as TRUE/FALSE; suffix: rewrite a suffix",
    )
    onprem_suffix: str | None = None
    aws_suffix: str | None = None
    authority: Side | None = Field(
        default=None, description="winner of a conflict (default: the mapping's)"
    )

    @property
    def aws_name(self) -> str:
        return self.aws or self.onprem

    @model_validator(mode="after")
    def _check(self) -> Self:
        secret = [n for n in (self.onprem, self.aws_name) if is_secret_attribute(n)]
        if secret:
            raise ValueError(f"{secret[0]}: password attributes are never read or written")
        if self.transform == "suffix" and not (self.onprem_suffix and self.aws_suffix):
            raise ValueError("transform 'suffix' needs onprem_suffix and aws_suffix")
        if self.transform == "enabled" and self.onprem.lower() != "useraccountcontrol":
            raise ValueError("transform 'enabled' reads userAccountControl")
        return self


class DeletionGuard(_Model):
    """The limits of the deletion guard (the guard itself: ``deletion_guard.DeleteGuard``).

    A delete first waits ``settle_s``, so the deletes of one source operation that arrive
    over several cycles (a directory deletes one entry at a time) are judged together.
    Deletes to a side are held when those pending together pass ``max_count`` /
    ``max_percent``, or when they plus the deletes applied to that side over the last
    ``window_s`` pass ``window_max_count`` / ``window_max_percent`` (a slow trickle).
    None turns a window rule off."""

    max_count: int = Field(
        default=50, ge=0, description="deletes pending together per side (settling or due)"
    )
    max_percent: float = Field(default=10.0, ge=0, le=100)
    min_objects_for_percent: int = Field(
        default=20, ge=0, description="below this many objects only the count limits apply"
    )
    window_s: float = Field(
        default=3600.0, gt=0, description="the rolling window of the cumulative limits"
    )
    window_max_count: int | None = Field(
        default=200, ge=0, description="deletes per side and window (None: no count limit)"
    )
    window_max_percent: float | None = Field(
        default=25.0,
        ge=0,
        le=100,
        description="deletes per window as a percentage of the side (None: no such limit)",
    )
    settle_s: float = Field(
        default=30.0,
        ge=0,
        description="a delete waits this long before it is written, so the deletes of one "
        "source operation are judged together (0: written by the cycle that sees them)",
    )
    reminder_s: float = Field(
        default=300.0, gt=0, description="while the guard holds deletes, a reminder this often"
    )


class Mapping(_Model):
    """The mapping rules: scopes, filters, attributes, authority and the delete guard."""

    onprem_root: str = Field(description="the on-prem scope, e.g. OU=InduTech,DC=corp,…")
    aws_root: str = Field(description="the AWS delegated OU, e.g. OU=AWS,DC=aws,…")
    default_authority: Side = "onprem"
    exclude_ous: tuple[str, ...] = Field(
        default=(), description="names (RDN values) of OUs under the on-prem root left out"
    )
    user_filter: str = "(&(objectCategory=person)(objectClass=user))"
    group_filter: str = "(objectClass=group)"
    ou_filter: str = "(objectClass=organizationalUnit)"
    attributes: dict[str, AttributeRule]
    deletion_guard: DeletionGuard = DeletionGuard()

    def root(self, side: Side) -> str:
        return self.onprem_root if side == "onprem" else self.aws_root

    def rules_for(self, kind: Kind) -> dict[str, AttributeRule]:
        return {name: rule for name, rule in self.attributes.items() if kind in rule.kinds}

    def authority(self, attribute: str | None) -> Side:
        if attribute is not None:
            rule = self.attributes.get(attribute)
            if rule is not None and rule.authority is not None:
                return rule.authority
        return self.default_authority

    @model_validator(mode="after")
    def _identity_attributes(self) -> Self:
        kinds: tuple[Kind, ...] = ("user", "group")
        for kind in kinds:
            names = {rule.onprem.lower() for rule in self.rules_for(kind).values()}
            if "samaccountname" not in names:
                raise ValueError(
                    f"attributes must map sAMAccountName for {kind}s (needed to create them)"
                )
        return self


def load_mapping(path: Path, **overrides: object) -> Mapping:
    """Read and validate the TOML mapping; ``overrides`` replace top-level keys (tests)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"cannot read the mapping file {path}: {exc}") from None
    raw.update(overrides)
    try:
        return Mapping.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in error['loc']) or '(file)'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        detail = "\n".join(lines)
        raise MappingError(f"invalid mapping file {path}:\n{detail}") from None


class IdentitySyncSettings(WorkerSettings):
    """Settings of identity-sync (env prefix IDENTITY_SYNC_).

    ``writer_concurrency`` (``IDENTITY_SYNC_WRITER_CONCURRENCY``, 1-16, default 4): how
    many LDAPS connections per DC write at the same time; the reconciler sends only
    writes independent of each other together (engine module docstring), so the
    order guarantees do not depend on it. A dry run always plans one write at a time.
    """

    service_name: ClassVar[str] = "identity-sync"
    model_config = SettingsConfigDict(env_prefix="IDENTITY_SYNC_")

    onprem: LdapSettings = Field(description="the on-prem DC (DirSync right needed)")
    aws: LdapSettings = Field(description="the AWS Managed AD DC (delegated admin)")
    mapping_file: Path = Field(description="TOML mapping rules")
    s3: S3Settings = Field(description="where the anchor state lives")
    state_bucket: str = Field(default="indutech-backup", min_length=1)
    state_key: str = Field(default="identity-sync/state.json", min_length=1)
    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="a cycle runs at least this often without a change (retries, quarantine "
        "backoffs, deletes that finished settling); changes wake one at once",
    )
    probe_interval_s: float = Field(
        default=0.2,
        ge=0.05,
        le=60,
        description="how often each DC's highestCommittedUSN is read (a base-scope rootDSE "
        "read, about 1 ms); only when it moved are the changed objects searched for, so this "
        "bounds the time from a change to its cycle",
    )
    usn_lookup_max: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="a USN gap up to this is looked up by uSNChanged through the index (one "
        "search per 100 USNs); a larger one runs the DirSync / uSNChanged scan of the whole "
        "domain (0: always scan)",
    )
    change_notifications: bool = Field(
        default=False,
        description="also listen to the DCs' change notifications, which may name a change "
        "before the next probe. Off by default: the probe bounds the delay by itself, and "
        "Samba serves each notification by re-running the subtree search (measured: p50 "
        "1.3 s with them, 0.13 s without, at 550 objects)",
    )
    reconcile_interval_s: float = Field(
        default=900.0, gt=0, description="full reconcile that repairs drift"
    )
    dry_run: bool = Field(default=False, description="print the planned changes, write nothing")
    dc_backoff_initial_s: float = Field(
        default=1.0, gt=0, description="first wait before a DC that did not answer is tried again"
    )
    dc_backoff_max_s: float = Field(
        default=60.0, gt=0, description="longest wait before a DC that did not answer is retried"
    )
    dc_change_delete_hold_s: float = Field(
        default=300.0,
        ge=0,
        description="after a side moves to another DC, deletes on the other side wait this "
        "long (writes not yet replicated to the new DC must not read as deletes)",
    )
    writer_concurrency: int = Field(
        default=4,
        ge=1,
        le=16,
        description="LDAPS connections per DC that write concurrently (1: one write at a time); "
        "writes that depend on each other still wait (parents, members, moves, deletes)",
    )
    quarantine_backoff_initial_s: float = Field(
        default=30.0,
        gt=0,
        description="an object that could not be applied waits this long before it is tried "
        "again (doubling per failed try); a change to it ends the wait",
    )
    quarantine_backoff_max_s: float = Field(
        default=3600.0, gt=0, description="longest wait of a quarantined object between tries"
    )
    audit_kafka: KafkaSettings | None = Field(
        default=None, description="where to publish the audit records (unset: log only)"
    )
    audit_topic: str = Field(default=Topics.IDENTITY_CHANGES, min_length=1)

    @field_validator("mapping_file")
    @classmethod
    def _mapping_file_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"{value} does not exist")
        return value
