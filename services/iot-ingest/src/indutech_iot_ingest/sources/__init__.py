"""Where iot-ingest reads: SAN files (tailed) parsed into validated records."""

from indutech_iot_ingest.errors import RejectedLine
from indutech_iot_ingest.sources.records import LineParser, ParsedRecord, watch_specs
from indutech_iot_ingest.sources.san import SanSource

__all__ = ["LineParser", "ParsedRecord", "RejectedLine", "SanSource", "watch_specs"]
