"""LDAPS connections to Active Directory domain controllers (ldap3).

Only ``ldaps://`` is accepted (the settings refuse anything else), the CA is
verified and the host name checked; passwords never leave the SecretStr
except into the bind itself.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException

from indutech_common.errors import DependencyUnavailableError, IndutechError
from indutech_common.settings import LdapSettings


class LdapError(IndutechError):
    """Base of the directory errors raised by the common library."""


class LdapBindError(LdapError):
    """The directory refused the bind credentials."""


def ldap_server(settings: LdapSettings) -> ldap3.Server:
    parts = urlsplit(settings.url)
    tls = ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        version=ssl.PROTOCOL_TLS_CLIENT,
        ca_certs_file=str(settings.ca_file) if settings.ca_file else None,
    )
    return ldap3.Server(
        parts.hostname or "",
        port=parts.port or 636,
        use_ssl=True,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=settings.connect_timeout_s,
    )


def ldap_connect(settings: LdapSettings, **connection_kwargs: object) -> ldap3.Connection:
    """A bound connection (synchronous ldap3; call it in a thread from async code)."""
    server = ldap_server(settings)
    try:
        connection = ldap3.Connection(
            server,
            user=settings.bind_dn,
            password=settings.password.get_secret_value(),
            raise_exceptions=False,
            receive_timeout=int(settings.connect_timeout_s * 4),
            **connection_kwargs,
        )
        connection.open()
    except LDAPException as exc:
        raise DependencyUnavailableError(
            f"could not open {settings.url}: {type(exc).__name__}: {exc}. Check the DC is up "
            "and that LDAP__CA_FILE names the CA of its certificate."
        ) from None
    if not connection.bind():
        description = connection.result.get("description", "unknown")
        connection.unbind()
        raise LdapBindError(
            f"{settings.url} refused the bind as {settings.bind_dn!r} ({description}); check "
            "the bind DN and password."
        )
    return connection
