"""Where the shipper reads: the workers' Prometheus endpoints."""

from indutech_metrics_shipper.sources.scrape import Scrape, ScrapeSource, Target

__all__ = ["Scrape", "ScrapeSource", "Target"]
