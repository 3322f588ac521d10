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
from indutech_common.settings import LdapSettings, TlsSettings
from indutech_common.tls import create_client_ssl_context


class LdapError(IndutechError):
    """Base of the directory errors raised by the common library."""


class LdapBindError(LdapError):
    """The directory refused the bind credentials."""


class VerifiedTls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's TLS with the standard library doing the host name check.

    ldap3 2.9 switches the context's own check off and calls the deprecated
    ``ssl.match_hostname`` (gone in Python 3.12), and skips it entirely when the
    handshake is deferred. Here OpenSSL checks the name (DNS or IP SAN) during
    every handshake.
    """

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, connection: ldap3.Connection, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._server_hostname,
        )


def ldap_server(settings: LdapSettings) -> ldap3.Server:
    parts = urlsplit(settings.url)
    host = parts.hostname or ""
    # Samba and AD DCs offer TLS 1.2 at least; 1.3 is negotiated where both sides have it.
    context = create_client_ssl_context(TlsSettings(ca_file=settings.ca_file, min_version="1.2"))
    tls = VerifiedTls(context, host)
    return ldap3.Server(
        host,
        port=parts.port or 636,
        use_ssl=True,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=settings.connect_timeout_s,
    )


def ldap_connect(settings: LdapSettings, **connection_kwargs: object) -> ldap3.Connection:
    """A bound connection (synchronous ldap3; call it in a thread from async code)."""
    server = ldap_server(settings)
    connection: ldap3.Connection | None = None
    try:
        options: dict[str, object] = {
            "raise_exceptions": False,
            "receive_timeout": int(settings.connect_timeout_s * 4),
            **connection_kwargs,  # the caller's choice wins (ASYNC_STREAM needs no timeout)
        }
        connection = ldap3.Connection(
            server,
            user=settings.bind_dn,
            password=settings.password.get_secret_value(),
            **options,
        )
        connection.open()
    except LDAPException as exc:
        socket = getattr(connection, "socket", None)
        if socket is not None:  # ldap3 leaves the refused socket open
            socket.close()
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
