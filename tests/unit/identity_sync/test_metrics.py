"""identity-sync's own metrics carry the ``worker`` label, like the shared set."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from indutech_identity_sync.config import IdentitySyncSettings
from indutech_identity_sync.metrics import IdentitySyncMetrics
from indutech_identity_sync.worker import IdentitySyncWorker

EXAMPLE = Path(__file__).resolve().parents[3] / "services/identity-sync/mapping.example.toml"
FAMILIES = {
    "indutech_identity_sync_writes",
    "indutech_identity_sync_conflicts",
    "indutech_identity_sync_deletion_guard_tripped",
    "indutech_identity_sync_deletes_in_window",
    "indutech_identity_sync_deletes_pending",
    "indutech_identity_sync_dc",
    "indutech_identity_sync_dc_failovers",
    "indutech_identity_sync_quarantined",
    "indutech_identity_sync_quarantine_events",
    "indutech_identity_sync_change_probes",
    "indutech_identity_sync_change_searches",
}


def own_lines(exposition: bytes) -> list[str]:
    """The sample lines of identity-sync's own metrics in a /metrics answer."""
    return [
        line
        for line in exposition.decode().splitlines()
        if line.startswith("indutech_identity_sync_")
    ]


class TestWorkerLabel:
    def test_worker_metrics_page_labels_every_own_series(self) -> None:
        """/metrics of a new worker: every indutech_identity_sync_* series names the worker."""
        ldap = {"bind_dn": "CN=sync", "password": "pw", "base_dn": "DC=corp"}
        settings = IdentitySyncSettings(
            onprem={**ldap, "url": "ldaps://dc1:636"},
            aws={**ldap, "url": "ldaps://dc2:636"},
            mapping_file=EXAMPLE,
            s3={"sse": "AES256"},
            health={"host": "127.0.0.1", "port": 0},
        )
        lines = own_lines(IdentitySyncWorker(settings).metrics.exposition())
        assert lines  # the DC gauges and the conflict counter exist from the start
        assert all('worker="identity-sync"' in line for line in lines), lines

    def test_every_family_has_the_label(self) -> None:
        """Each of the eleven families, once set, is a series with worker="<name>"."""
        registry = CollectorRegistry()
        metrics = IdentitySyncMetrics("identity-sync-test", registry)
        metrics.wrote("aws", "add", 2)
        metrics.conflicts_resolved(1)
        metrics.deletes("aws", tripped=True, in_window=3, pending=4)
        metrics.dc_in_use("onprem", ["ldaps://dc1:636"], "ldaps://dc1:636")
        metrics.failover("onprem")
        metrics.quarantine_now("aws", 1)
        metrics.quarantine_event("aws", "collision")
        metrics.probed("onprem")
        metrics.searched("aws", "lookup")
        families = {family.name: family for family in registry.collect() if family.name in FAMILIES}
        assert set(families) == FAMILIES
        for family in families.values():
            for series in family.samples:
                assert series.labels["worker"] == "identity-sync-test", series
        assert (
            registry.get_sample_value(
                "indutech_identity_sync_writes_total",
                {"worker": "identity-sync-test", "side": "aws", "op": "add"},
            )
            == 2
        )
