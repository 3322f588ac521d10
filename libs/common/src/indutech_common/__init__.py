"""Shared library of the InduTech Flows workers.

Packages by concept: ``settings`` (configuration), ``logging`` (structured JSON
logs), ``tls`` (verified TLS contexts), ``kafka`` (SASL_SSL clients, dead
letters), ``s3`` (an S3 client that cannot write without SSE), ``warehouse``
(asyncpg for PostgreSQL and Redshift), ``odbc`` (ERP source connections),
``ldap`` (LDAPS connections), ``health`` (one port for /healthz, /readyz,
/metrics), ``metrics``, ``lifecycle`` (start → run → drain → stop),
``retry`` (backoff with jitter) and ``schemas`` (the records of DESIGN.md).
"""

__version__ = "0.1.0"
