"""The root of every exception the common library raises on purpose."""

from __future__ import annotations


class IndutechError(Exception):
    """Base class: a failure the library understood and can explain.

    Messages say what went wrong and what to do next, and never contain secrets.
    """


class ConfigError(IndutechError):
    """The configuration is invalid; raised at start-up, before any work."""


class DependencyUnavailableError(IndutechError):
    """A dependency (broker, S3, database, directory) did not answer in time."""
