"""Benchmarks of InduTech Flows, each against a real peer in the same run (`make bench`)."""
