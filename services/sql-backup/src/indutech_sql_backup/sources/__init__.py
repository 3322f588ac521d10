"""Where sql-backup reads from: the ERP over ODBC."""

from indutech_sql_backup.sources.discovery import discover, selected
from indutech_sql_backup.sources.odbc import OdbcSource

__all__ = ["OdbcSource", "discover", "selected"]
