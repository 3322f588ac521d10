"""Configuration shared by every worker.

Each service declares one ``WorkerSettings`` subclass with its own env prefix
(``IOT_INGEST_``, ``SQL_BACKUP_`` …). Blocks shared by several services (Kafka,
S3, the warehouse …) are plain pydantic models nested in it, so the variables
look like ``IOT_INGEST_KAFKA__BOOTSTRAP_SERVERS``. A cluster-wide fallback with
the ``INDUTECH_`` prefix lets one ConfigMap configure every worker, while a
service-prefixed variable still wins. Secrets are ``SecretStr`` and may also be
read from files in a secrets directory (Kubernetes secret volumes), one file
per field, nested names joined with ``__`` (``kafka__password``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from indutech_common.errors import ConfigError

SHARED_ENV_PREFIX = "INDUTECH_"
SECRETS_DIR_ENV = "INDUTECH_SECRETS_DIR"


def _key_prefix(value: str) -> str:
    if value.startswith("/"):
        raise ValueError("a key prefix has no leading '/' (S3 keys do not start with one)")
    if value and not value.endswith("/"):
        raise ValueError("a key prefix must end with '/' (or be empty): add the trailing '/'")
    return value


KeyPrefix = Annotated[str, AfterValidator(_key_prefix)]
"""An S3 key prefix setting: empty, or ``a/b/`` (no leading ``/``, a trailing one).

Every worker's prefix settings use it, so ``{prefix}{name}`` is always a key in
the prefix's folder (``tests/x`` + ``iot/`` would silently write ``tests/xiot/``).
"""


class _Block(BaseModel):
    """A nested settings block: no env reading of its own, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __str__(self) -> str:
        # pydantic already masks SecretStr values; repr is kept explicit for logs.
        return repr(self)


class TlsSettings(_Block):
    """TLS towards one peer. Verification and hostname checks cannot be turned off."""

    ca_file: Path | None = Field(
        default=None, description="PEM bundle of CAs to trust; the system store when unset"
    )
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(default=None, description="client private key (mutual TLS)")
    key_password: SecretStr | None = None
    min_version: Literal["1.2", "1.3"] = Field(
        default="1.3", description="lowest TLS version offered; 1.2 only for peers without 1.3"
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class KafkaSettings(_Block):
    """The Kafka API (Redpanda in production, Apache Kafka locally)."""

    bootstrap_servers: str = Field(default="localhost:9093", min_length=1)
    security_protocol: Literal["SASL_SSL", "SSL", "PLAINTEXT", "SASL_PLAINTEXT"] = "SASL_SSL"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSettings = TlsSettings()
    client_id: str | None = None
    request_timeout_ms: int = Field(default=30_000, gt=0)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Self:
        if self.security_protocol.startswith("SASL") and (not self.username or not self.password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs username and password "
                "(SCRAM credentials of the Kafka user)"
            )
        return self


class S3Settings(_Block):
    """S3 (AWS in production, MinIO locally). SSE is never optional."""

    endpoint_url: str | None = Field(default=None, description="unset for AWS itself")
    region: str = "eu-west-1"
    access_key_id: SecretStr | None = Field(
        default=None, description="unset to use the pod's IAM role (IRSA)"
    )
    secret_access_key: SecretStr | None = None
    sse: Literal["AES256", "aws:kms"] = "aws:kms"
    kms_key_id: str | None = Field(default=None, description="required when sse is aws:kms")
    ca_file: Path | None = None
    lake_bucket: str = "indutech-lake"
    backup_bucket: str = "indutech-backup"
    max_pool_connections: int = Field(default=20, gt=0)

    @model_validator(mode="after")
    def _kms_needs_key(self) -> Self:
        if self.sse == "aws:kms" and not self.kms_key_id:
            raise ValueError("sse aws:kms needs kms_key_id (the KMS key id or ARN)")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self


class WarehouseSettings(_Block):
    """Redshift in production, PostgreSQL locally; asyncpg speaks to both."""

    host: str = "localhost"
    port: int = Field(default=5432, gt=0, lt=65536)
    database: str = "warehouse"
    user: str = "indutech"
    password: SecretStr | None = None
    sslmode: Literal["verify-full", "disable"] = Field(
        default="verify-full", description="'disable' only for a developer who asks by name"
    )
    ca_file: Path | None = None
    dialect: Literal["postgres", "redshift"] = "postgres"
    connect_timeout_s: float = Field(default=10.0, gt=0)


class OdbcSourceSettings(_Block):
    """The ERP source: SQL Server in production, PostgreSQL through psqlODBC locally."""

    dialect: Literal["mssql", "postgres"] = "mssql"
    odbc_driver: str = "ODBC Driver 18 for SQL Server"
    host: str = "localhost"
    port: int = Field(default=1433, gt=0, lt=65536)
    database: str = "erp"
    user: str = "indutech"
    password: SecretStr | None = None
    ca_file: Path | None = Field(
        default=None,
        description="CA of the server certificate: psqlODBC and FreeTDS (required there); "
        "refused for ODBC Driver 18, which uses the system trust store",
    )
    login_timeout_s: int = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _ca_file_reaches_the_driver(self) -> Self:
        # A setting the driver would ignore, or TLS without a verified certificate, is
        # refused at start-up rather than discovered in production.
        from indutech_common.odbc import tls_refusal  # noqa: PLC0415 - odbc imports this module

        refusal = tls_refusal(dialect=self.dialect, driver=self.odbc_driver, ca_file=self.ca_file)
        if refusal:
            raise ValueError(refusal)
        return self


def _ldaps_urls(value: object) -> object:
    """``urls`` from the environment: a comma-separated list (or a JSON list)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class LdapSettings(_Block):
    """The domain controllers of one Active Directory domain, LDAPS only.

    ``url`` alone names one DC (as before). ``urls`` names several, in the order they are
    tried (env: comma-separated, ``ldaps://dc1:636,ldaps://dc2:636``); ``url`` is then the
    first of them. ``dc_urls`` is the list either way, ``for_dc(url)`` the settings of one.
    """

    url: str = Field(
        pattern=r"^ldaps://",
        description="ldaps://host:636 (plain ldap:// is refused); the first of urls when unset",
    )
    urls: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_ldaps_urls)] = Field(
        default=(),
        description="the DCs of the domain in the order they are tried (comma-separated); "
        "each ldaps://",
    )
    bind_dn: str
    password: SecretStr
    base_dn: str
    ca_file: Path | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _url_from_urls(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("url") and data.get("urls"):
            urls = _ldaps_urls(data["urls"])
            if isinstance(urls, list | tuple) and urls:
                data = {**data, "url": urls[0]}
        return data

    @model_validator(mode="after")
    def _urls_are_ldaps(self) -> Self:
        for url in self.urls:
            if not url.startswith("ldaps://"):
                raise ValueError(f"{url!r} in urls: only ldaps:// is accepted")
        if len(set(self.urls)) != len(self.urls):
            raise ValueError("urls lists a DC twice")
        if self.urls and self.url != self.urls[0]:
            raise ValueError(
                "url and urls disagree: set urls alone (url is then its first DC), or url alone"
            )
        return self

    @property
    def dc_urls(self) -> tuple[str, ...]:
        """Every DC, in the order they are tried."""
        return self.urls or (self.url,)

    def for_dc(self, url: str) -> LdapSettings:
        """These settings for one DC only (what ``ldap_connect`` opens)."""
        return self.model_copy(update={"url": url, "urls": ()})


class CloudWatchSettings(_Block):
    """CloudWatch metrics and logs (moto's server locally)."""

    endpoint_url: str | None = None
    region: str = "eu-west-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    ca_file: Path | None = None


class HealthSettings(_Block):
    """The one port serving /healthz, /readyz and /metrics."""

    host: str = "0.0.0.0"  # noqa: S104 - a pod's probes come from the kubelet, off-host
    port: int = Field(default=8080, ge=0, lt=65536, description="0 picks a free port (tests)")
    ping_timeout_s: float = Field(default=2.0, gt=0)


class LoggingSettings(_Block):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class WorkerSettings(BaseSettings):
    """Base of every service's settings.

    Subclasses set ``model_config = SettingsConfigDict(env_prefix="SERVICE_")``
    (the ``service_name`` class variable names the worker in logs and metrics).
    """

    service_name: ClassVar[str] = "worker"

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    logging: LoggingSettings = LoggingSettings()
    health: HealthSettings = HealthSettings()
    shutdown_timeout_s: float = Field(
        default=30.0, gt=0, description="graceful drain deadline after SIGTERM"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        shared_env = EnvSettingsSource(
            settings_cls, env_prefix=SHARED_ENV_PREFIX, env_nested_delimiter="__"
        )
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            shared_env,
            dotenv_settings,
        ]
        secrets_dir = os.environ.get(SECRETS_DIR_ENV)
        if secrets_dir:
            sources.append(
                NestedSecretsSettingsSource(
                    file_secret_settings,
                    secrets_dir=secrets_dir,
                    secrets_nested_delimiter="__",
                    secrets_prefix="",
                    secrets_dir_missing="error",
                )
            )
        return tuple(sources)


def describe_validation_error(exc: ValidationError, *, env_prefix: str) -> str:
    """One line per bad field: the env variable to set and what was expected."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        path = "__".join(str(part) for part in error["loc"] if not isinstance(part, int))
        variable = f"{env_prefix}{path}".upper() if path else env_prefix.rstrip("_")
        lines.append(f"  {path or '(settings)'} (env {variable}): {error['msg']}")
    return "\n".join(lines)


SettingsT = TypeVar("SettingsT", bound=WorkerSettings)


def load_settings(settings_cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build the settings or fail with every bad field named and what it expects."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        prefix = str(settings_cls.model_config.get("env_prefix") or SHARED_ENV_PREFIX)
        raise ConfigError(
            f"invalid configuration for {settings_cls.service_name}:\n"
            f"{describe_validation_error(exc, env_prefix=prefix)}\n"
            f"Set the variables above (or {SHARED_ENV_PREFIX}* for every worker) and start again."
        ) from None
