"""`python -m bench [NAME...]`: run the benchmarks (all by default) and write the results."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import (
    identity_sync,
    iot_aggregator,
    iot_aggregator_rebuild,
    iot_ingest,
    iot_pipeline,
    iot_to_s3,
    kafka_throughput,
    loader,
    metrics_shipper,
    sql_backup,
    sql_to_redshift,
    stack_start,
)
from bench.harness import BENCHMARKS_MD, RESULTS_JSON, Result, save
from indutech_common.logging import configure_logging

BENCHMARKS: dict[str, Callable[[], list[Result]]] = {
    "stack": stack_start.run,
    "kafka": kafka_throughput.run,
    "iot-ingest": iot_ingest.run,
    "iot-to-s3": iot_to_s3.run,
    "iot-pipeline": iot_pipeline.run,
    "iot-aggregator": iot_aggregator.run,
    "iot-aggregator-rebuild": iot_aggregator_rebuild.run,
    "identity": identity_sync.run,
    "sql-backup": sql_backup.run,
    "loader": loader.run,
    "sql-to-redshift": sql_to_redshift.run,
    "metrics-shipper": metrics_shipper.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run InduTech Flows benchmarks against the local stack (make stack-up first).",
    )
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="default: all")
    args = parser.parse_args(argv)
    configure_logging(level="WARNING", fmt="console")
    for name in args.names or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        results = BENCHMARKS[name]()
        for result in results:
            ratio = f" (ratio {result.ratio} vs {result.peer})" if result.ratio is not None else ""
            print(f"   {result.name}: {result.value} {result.unit}{ratio}", flush=True)
        save(results)
    print(f"written: {RESULTS_JSON} and {BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
