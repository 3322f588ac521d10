"""Where the shipper writes: CloudWatch metrics (PutMetricData)."""

from indutech_metrics_shipper.sinks.cloudwatch_metrics import (
    CloudWatchMetricsSink,
    DatumBuffer,
    MetricBuffer,
)
from indutech_metrics_shipper.sinks.disk_buffer import DiskDatumBuffer

__all__ = ["CloudWatchMetricsSink", "DatumBuffer", "DiskDatumBuffer", "MetricBuffer"]
