"""The warehouse goes away: the worker keeps its memory under the open-keys cap by pausing
consumption, retries, and once the warehouse is back the views are exact."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from structlog.testing import capture_logs

from tests.integration.iot_aggregator.conftest import (
    BASE_TIME,
    Names,
    client_ticket,
    expected_tickets,
    produce,
    running_worker,
    view_tickets,
    wait_for,
)
from tests.support.proxy import SwitchableProxy
from tests.support.stack import StackSettings

CAP = 40
POLL = 20


class TestWarehouseOutage:
    async def test_memory_stays_under_the_cap_then_catch_up_is_exact(
        self, stack: StackSettings, names: Names
    ) -> None:
        """Warehouse unreachable while 600 tickets (hundreds of keys) arrive: open keys never
        exceed cap + one poll, consumption pauses; after the outage the views are exact."""
        async with SwitchableProxy(stack.warehouse.host, stack.warehouse.port) as proxy:
            warehouse = stack.warehouse.model_copy(update={"port": proxy.port})
            with capture_logs() as logs:
                async with running_worker(
                    stack,
                    names,
                    warehouse=warehouse,
                    max_open_keys=CAP,
                    poll_max_records=POLL,
                    emit_interval_s=0.2,
                    retry_max_s=0.5,
                ) as worker:
                    await wait_for(
                        lambda: asyncio.sleep(
                            0, [e for e in logs if e["event"] == "partition_ready"]
                        ),
                        lambda ready: len(ready) >= 2,
                        timeout_s=30,
                    )
                    proxy.cut()
                    tickets = [
                        client_ticket(i, BASE_TIME + timedelta(seconds=i * 7)) for i in range(600)
                    ]
                    await produce(stack, names.ticket_topic, tickets)
                    peak = 0
                    registry = worker.metrics.registry
                    labels = {"worker": "iot-aggregator"}
                    for _ in range(40):  # 4 s of outage, sampled
                        value = registry.get_sample_value(
                            "indutech_iot_aggregator_windows_open", labels
                        )
                        peak = max(peak, int(value or 0))
                        await asyncio.sleep(0.1)
                    paused = registry.get_sample_value("indutech_iot_aggregator_paused", labels)
                    failed = registry.get_sample_value(
                        "indutech_iot_aggregator_warehouse_writes_total",
                        {**labels, "outcome": "failed"},
                    )
                    proxy.restore()
                    want = expected_tickets(tickets)
                    got = await wait_for(
                        lambda: view_tickets(stack, names.schema), lambda v: v == want
                    )
        assert paused == 1
        assert failed is not None
        assert failed >= 1
        assert CAP <= peak <= CAP + POLL
        assert any(e["event"] == "paused_at_cap" for e in logs)
        assert any(e["event"] == "resumed" for e in logs)
        assert got == want
