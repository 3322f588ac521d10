"""The command line every worker shares: ``--help`` lists each setting and its env variable."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from indutech_common.errors import ConfigError
from indutech_common.settings import SHARED_ENV_PREFIX, WorkerSettings, load_settings

EXIT_CONFIG = 2


def iter_settings(
    model: type[BaseModel], prefix: str, path: str = ""
) -> Iterator[tuple[str, FieldInfo]]:
    """(ENV_VARIABLE, field) for every leaf field of a settings model, nested with ``__``."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        dotted = f"{path}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_settings(annotation, prefix, f"{dotted}__")
        else:
            yield f"{prefix}{dotted}".upper(), info


def settings_help(settings_cls: type[WorkerSettings]) -> str:
    prefix = str(settings_cls.model_config.get("env_prefix") or SHARED_ENV_PREFIX)
    lines = [
        f"Settings (environment; {SHARED_ENV_PREFIX}* applies to every worker and "
        f"{prefix}* overrides it; secret files in $INDUTECH_SECRETS_DIR):"
    ]
    for variable, info in iter_settings(settings_cls, prefix):
        secret = "SecretStr" in str(info.annotation)
        if info.is_required():
            default = "required"
        elif secret or isinstance(info.default, SecretStr):
            default = "secret"
        else:
            default = f"default {info.default!r}"
        description = f" — {info.description}" if info.description else ""
        lines.append(f"  {variable} ({default}){description}")
    return "\n".join(lines)


def worker_main(
    *,
    prog: str,
    description: str,
    settings_cls: type[WorkerSettings],
    run: Callable[[Any, argparse.Namespace], int],
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse arguments, load settings (exit 2 naming every bad field), then ``run``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=settings_help(settings_cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(settings_cls)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return run(settings, args)
