"""Generators of fake plant data for the demo, the tests and the benchmarks.

Not part of any worker: the production image installs without the dev group
(`uv sync --no-dev`), which is the only way this package is installed.
"""
