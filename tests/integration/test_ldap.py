"""LDAPS bind and search on both Samba AD domain controllers, certificates verified."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import ldap3
import pytest
from pydantic import SecretStr

from indutech_common.errors import DependencyUnavailableError
from indutech_common.ldap import LdapBindError, ldap_connect
from indutech_common.settings import LdapSettings
from tests.support.stack import StackSettings

SIDES = ["ad_onprem", "ad_aws"]
DELEGATED_OU = {"ad_onprem": "OU=InduTech", "ad_aws": "OU=AWS"}


def side(stack: StackSettings, name: str) -> LdapSettings:
    settings = getattr(stack, name)
    assert isinstance(settings, LdapSettings)
    return settings


@pytest.mark.parametrize("name", SIDES)
class TestLdaps:
    async def test_bind_and_search(self, stack: StackSettings, name: str) -> None:
        """A verified LDAPS bind finds the base OU structure of each domain."""
        settings = side(stack, name)

        def search() -> tuple[set[str], str]:
            connection = ldap_connect(settings)
            try:
                connection.search(
                    f"{DELEGATED_OU[name]},{settings.base_dn}",
                    "(objectClass=organizationalUnit)",
                    ldap3.SUBTREE,
                    attributes=["ou"],
                )
                names = {str(e.ou) for e in connection.entries}
                cipher = connection.socket.version()
            finally:
                connection.unbind()
            return names, cipher

        names, tls_version = await asyncio.to_thread(search)
        assert {"Users", "Groups"} <= names
        assert tls_version == "TLSv1.3"

    async def test_wrong_password_is_a_bind_error(self, stack: StackSettings, name: str) -> None:
        settings = side(stack, name).model_copy(
            update={"password": SecretStr("wrong-password-1A!")}
        )
        with pytest.raises(LdapBindError, match="refused the bind"):
            await asyncio.to_thread(ldap_connect, settings)

    async def test_unknown_ca_is_refused(
        self, stack: StackSettings, name: str, tmp_path: Path
    ) -> None:
        """With a CA that did not sign the DC's certificate, the connection fails."""
        settings = side(stack, name)
        host = settings.url.removeprefix("ldaps://").split(":")[0]
        leaf = tmp_path / "not-a-ca.pem"
        leaf.write_text(ssl.get_server_certificate((host, 636)))
        with pytest.raises(DependencyUnavailableError, match="CA_FILE"):
            await asyncio.to_thread(ldap_connect, settings.model_copy(update={"ca_file": leaf}))


def test_plain_ldap_url_refused() -> None:
    """Settings accept ldaps:// only."""
    with pytest.raises(ValueError, match="ldaps://"):
        LdapSettings(url="ldap://127.0.0.2:389", bind_dn="x", password="y", base_dn="z")
