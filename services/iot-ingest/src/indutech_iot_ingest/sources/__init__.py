"""Where iot-ingest reads: SAN files (tailed) parsed into validated records."""

from indutech_iot_ingest.sources.exceptions import RejectedLine
from indutech_iot_ingest.sources.records import LineParser, ParsedRecord, watch_specs

__all__ = ["LineParser", "ParsedRecord", "RejectedLine", "watch_specs"]
