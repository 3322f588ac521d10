"""Where the shipper writes: CloudWatch metrics (PutMetricData)."""

from indutech_metrics_shipper.sinks.cloudwatch_metrics import CloudWatchMetricsSink, DatumBuffer

__all__ = ["CloudWatchMetricsSink", "DatumBuffer"]
