"""Users the sync creates get a random initial password in their add, so they can be enabled
under the DC's password policy (the AWS-side DC runs AWS Managed AD's default: complexity on,
7 characters at least), and that password is nowhere but in the add."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import ldap3
import pytest
from structlog.testing import capture_logs

from indutech_identity_sync import initial_password
from indutech_identity_sync.config import SIDES, Side
from tests.integration.identity_sync.conftest import Live

DOMAIN_PASSWORD_COMPLEX = 0x1  # pwdProperties bit of the domain object
UAC_NORMAL_ACCOUNT = "512"


class Recorder:
    """A password maker that keeps what it made, so the test can look for it everywhere."""

    def __init__(self, weak: str | None = None) -> None:
        self.weak = weak
        self.made: list[str] = []
        self.names: list[list[str]] = []

    def __call__(self, names: Iterable[str]) -> str:
        self.names.append(list(names))
        password = self.weak or initial_password.generate(self.names[-1])
        self.made.append(password)
        return password


def domain_policy(live: Live, side: Side) -> tuple[int, int]:
    """(pwdProperties, minPwdLength) of the side's domain object."""
    connection = live.connections[side]
    base = live.settings[side].base_dn
    connection.search(
        base, "(objectClass=*)", ldap3.BASE, attributes=["pwdProperties", "minPwdLength"]
    )
    entry = next(e for e in connection.response or [] if e.get("type") == "searchResEntry")
    raw = entry["raw_attributes"]
    return int(raw["pwdProperties"][0]), int(raw["minPwdLength"][0])


class TestInitialPassword:
    def test_enabled_users_are_created_with_a_password_under_the_policy(
        self, live: Live, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Both DCs enforce complexity and a minimum length; an enabled user synced each way
        is created enabled with a password set (pwdLastSet > 0, Samba's and AD's sign of
        one), and the generated password is in no log line, audit record or state."""
        for side in SIDES:
            properties, min_length = domain_policy(live, side)
            assert properties & DOMAIN_PASSWORD_COMPLEX, f"{side}: complexity is off"
            assert min_length >= 7, f"{side}: minimum length {min_length}"
        onprem_user = live.user("onprem", "Pat Enabled", displayName="Pat Enabled")
        aws_user = live.user("aws", "Kim Enabled")
        recorder = Recorder()
        caplog.set_level(logging.DEBUG)  # every library log record, ldap3's included
        with capture_logs() as logs:
            report = live.sync(password=recorder)
        assert report.failed == 0
        created: list[tuple[Side, str]] = [
            ("aws", live.twin(onprem_user, "aws")),
            ("onprem", live.twin(aws_user, "onprem")),
        ]
        for side, dn in created:
            assert live.read(side, dn, "userAccountControl") == [UAC_NORMAL_ACCOUNT]
            assert int(live.read(side, dn, "pwdLastSet")[0]) > 0, f"{dn}: no password set"
        assert len(recorder.made) == 2  # one per created user, nothing else
        assert any("Pat Enabled" in names for names in recorder.names)  # kept out of it
        places = {
            "structured logs": repr(logs),
            "library logs": caplog.text,
            "audit records": "".join(c.model_dump_json() for c in report.changes),
            "state": live.state.model_dump_json(),
        }
        for password in recorder.made:
            assert initial_password.is_complex(password)
            for where, text in places.items():
                assert password not in text, f"the initial password is in the {where}"
        assert all("unicodePwd" not in c.attributes for c in report.changes)

    def test_a_weak_initial_password_is_refused_and_says_what_to_check(self, live: Live) -> None:
        """The DC really enforces its policy: a 3-character password makes the add fail
        (0000052D) with a message that points at the password policy, and no user appears."""
        dn = live.user("onprem", "Weak Pw")
        with capture_logs() as logs:
            report = live.sync(password=Recorder(weak="Ab1"))
        assert report.failed == 1
        assert not live.exists("aws", live.twin(dn, "aws"))
        failure = next(e for e in logs if e["event"] == "identity_object_quarantined")
        assert failure["cause"] == "refused"
        assert "0000052D" in failure["reason"]
        assert "password policy" in failure["reason"]
        assert "Ab1" not in repr(logs)
        assert "Ab1" not in "".join(c.model_dump_json() for c in report.changes)
