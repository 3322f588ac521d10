"""Where the shipper writes: CloudWatch metrics, by PutMetricData or as EMF log events."""

from indutech_metrics_shipper.sinks.cloudwatch_metrics import (
    BufferedSink,
    CloudWatchMetricsSink,
    DatumBuffer,
    MetricBuffer,
)
from indutech_metrics_shipper.sinks.disk_buffer import DiskDatumBuffer
from indutech_metrics_shipper.sinks.emf import EmfSink

__all__ = [
    "BufferedSink",
    "CloudWatchMetricsSink",
    "DatumBuffer",
    "DiskDatumBuffer",
    "EmfSink",
    "MetricBuffer",
]
