"""Where the shipper reads: the workers' Prometheus endpoints."""

from indutech_metrics_shipper.sources.consumer_lag import ConsumerLagSource
from indutech_metrics_shipper.sources.scrape import Scrape, ScrapeSource, Target
from indutech_metrics_shipper.sources.warehouse_queue import WarehouseQueueSource

__all__ = ["ConsumerLagSource", "Scrape", "ScrapeSource", "Target", "WarehouseQueueSource"]
