"""Logging for `potluck serve`: JSON lines when not on a terminal (journald, docker logs),
readable text on one, and secrets redacted from both, tracebacks included.

Redaction knows the configured secrets by value (platform tokens and passwords, API keys,
the web token) and the shapes secrets take in URLs and headers, so a token that reaches a
log line through an exception's message or a library's URL is still masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO

from .config import Config

MASK = "[redacted]"
SHAPES = (  # (pattern, replacement): secrets by the shape they take in URLs and headers
    (re.compile(r"(/bot)\d{3,}:[A-Za-z0-9_-]{20,}"), r"\1" + MASK),  # Telegram bot URLs
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),  # OpenAI-style API keys
    (re.compile(r"(?i)(bearer )[A-Za-z0-9._~+/=-]{12,}"), r"\1" + MASK),
    (
        re.compile(r"(?i)\b(token|access_token|api_key|apikey|password|secret)=[^&\s\"']+"),
        r"\1=" + MASK,
    ),
)
NOISY = ("LiteLLM", "httpx", "docker", "urllib3", "nio", "discord", "aiohttp.access")


def config_secrets(config: Config, env: dict[str, str] | None = None) -> set[str]:
    """Every secret value this gateway knows, from its config, its files and environment."""
    env = dict(os.environ if env is None else env)
    found = set(config.secrets.values())
    for provider in config.providers.values():
        found.update(k for k in (provider.api_key, *(e.api_key for e in provider.endpoints)) if k)
    for settings in config.platforms.values():
        for key, value in settings.items():
            if any(word in key for word in ("token", "password", "secret", "key")):
                found.add(str(value))
    for name, value in env.items():
        if re.search(r"(API_KEY|TOKEN|SECRET|PASSWORD)$", name):
            found.add(value)
    token_file = config.home / "web.token"
    if token_file.exists():
        found.add(token_file.read_text().strip())
    return {s for s in found if len(s) >= 6}


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        for shape, replacement in SHAPES:
            text = shape.sub(replacement, text)
        return text


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def setup(
    config: Config,
    verbose: bool = False,
    stream: IO[str] | None = None,
    json_lines: bool | None = None,
) -> logging.Handler:
    """Install the root handler; JSON unless the stream is a terminal (or told)."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    redact = Redactor(config_secrets(config))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redact) if json_lines else TextFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
