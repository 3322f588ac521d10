"""The warehouse: Redshift in production, PostgreSQL locally, both through asyncpg.

``connection``: connections that always verify the server's certificate and host name
(unless a developer asks for ``sslmode=disable``) and the dialect switch (Redshift has no
binary COPY FROM STDIN: bulk loads go through S3). ``copy``: the pipelined Arrow →
PostgreSQL binary COPY loader, typed by the target table (``encoding``).
"""

from __future__ import annotations

from indutech_common.warehouse.connection import (
    connect_warehouse,
    create_warehouse_pool,
    supports_copy_from_stdin,
)
from indutech_common.warehouse.copy import QUEUE_DEPTH, copy_arrow_batches, target_columns
from indutech_common.warehouse.encoding import ArrowCopyError, BatchEncoder, TargetColumn

__all__ = [
    "QUEUE_DEPTH",
    "ArrowCopyError",
    "BatchEncoder",
    "TargetColumn",
    "connect_warehouse",
    "copy_arrow_batches",
    "create_warehouse_pool",
    "supports_copy_from_stdin",
    "target_columns",
]
