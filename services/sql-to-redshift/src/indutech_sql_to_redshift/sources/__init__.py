"""What sql-to-redshift reads: the backup bucket and the announcements of complete runs."""

from indutech_sql_to_redshift.sources.announcements import AnnouncementSource
from indutech_sql_to_redshift.sources.backup import BackupSource

__all__ = ["AnnouncementSource", "BackupSource"]
