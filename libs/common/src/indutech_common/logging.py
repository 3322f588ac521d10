"""Structured JSON logs that never carry a secret.

Three layers keep secrets out: ``SecretStr`` renders masked; any key that
names a secret (password, token, secret, …) is replaced; and every secret
value the worker loaded is scrubbed from the rendered line, which also covers
a secret that slipped into an exception message or a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from pydantic import BaseModel, SecretStr

REDACTED = "**********"
LIBRARY_REPEAT_WINDOW_S = 60.0
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|credential|api[_-]?key|private[_-]?key", re.I
)
_known_secrets: set[str] = set()


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a secret value so that it is scrubbed from every log line."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    # Very short values would scrub ordinary words; real secrets are longer.
    if raw and len(raw) >= 6:  # noqa: PLR2004
        _known_secrets.add(raw)


def register_secrets_of(model: BaseModel) -> None:
    """Register every ``SecretStr`` found anywhere inside a settings model."""
    for value in _walk(model):
        register_secret(value)


def _walk(value: object) -> Iterable[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _walk(item)


def scrub(text: str) -> str:
    """Replace every registered secret value in ``text``."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_secret_keys(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask values under secret-sounding keys and SecretStr values."""
    for key, value in list(event_dict.items()):
        if isinstance(value, SecretStr) or (_SECRET_KEY.search(key) and value is not None):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


class _ScrubbingRenderer:
    """Wrap a renderer so that the final line is scrubbed of known secrets."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        return scrub(str(self._inner(logger, method, event_dict)))


class RepeatFilter(logging.Filter):
    """Lets the first of each message of a library logger through per window, then holds the
    same message back until the window has passed; the next one carries ``repeated``, the
    count held back. aiokafka logs one failure on every retry (each ~100 ms while a broker is
    away): without this an outage would bury everything else in the log."""

    def __init__(
        self,
        prefix: str,
        *,
        window_s: float = LIBRARY_REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.window_s = window_s
        self._clock = clock
        # Keyed by the message template, not its arguments: their number is small and fixed.
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        since, held = self._seen.get(key, (-self.window_s, 0))
        if now - since < self.window_s:
            self._seen[key] = (since, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.repeated = held
        return True


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secret_keys,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str = "json",
    service: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and the stdlib root logger, for libraries) for one worker."""
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    out = stream or sys.stdout
    structlog.configure(
        processors=[*shared_processors(), _ScrubbingRenderer(renderer)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    # Library logs (aiokafka, botocore) go through the same pipeline and scrubbing.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _ScrubbingRenderer(renderer),
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=["repeated"]),
                *shared_processors(),
            ],
        )
    )
    handler.addFilter(RepeatFilter("aiokafka"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.getLevelName(level), logging.INFO))
    # aiokafka's warnings and errors name what our errors cannot (which broker, which
    # request failed); its INFO is chatter. A record's level is checked at its own logger,
    # so the worker's level must be applied here too.
    level_no = logging.getLevelName(level)
    library_level = logging.DEBUG if level_no <= logging.DEBUG else max(level_no, logging.WARNING)
    logging.getLogger("aiokafka").setLevel(library_level)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.get_logger(name, **initial)
