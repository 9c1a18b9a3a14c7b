"""Credentials out of anything printed or logged: ``redact_url`` for one URL, ``redact`` for
free text (an exception's message, a log line) that may hold URLs or connection strings.

``redis://:s3cr3t@host:6379/0`` -> ``redis://:***@host:6379/0``; ``user:pw@`` keeps the user;
Feast's connection-string form ``host:port,db=0,password=s3cr3t`` -> ``password=***``; query
parameters named like a secret (``password``, ``token``, ``secret``, ``key``) likewise.
Logging applies :func:`redact` to every line (``cascade.runtime.service_logging``); the CLIs
apply it to what they print. Cheap when there is nothing to hide (two substring tests).
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# scheme://[user][:password]@ : the password (or a lone token in the user slot) is masked
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*)(?::(?P<pw>[^/\s]*))?@"
)
_PARAM = re.compile(
    r"(?P<name>\b(?:password|passwd|pwd|token|secret|api_key|apikey|access_key|admin[-_]key)=)"
    r"[^,&\s'\"]+",
    re.IGNORECASE,
)


def _userinfo(match: re.Match[str]) -> str:
    user, pw = match.group("user"), match.group("pw")
    if pw is None:  # "scheme://token@host": a bare credential in the user slot
        return f"{match.group('scheme')}{MASK if user else ''}@"
    return f"{match.group('scheme')}{user}:{MASK}@"


def redact(text: str) -> str:
    """``text`` with URL passwords and ``password=...``-style values masked."""
    if "@" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _PARAM.sub(lambda m: m.group("name") + MASK, text)
    return text


def redact_url(url: str | None) -> str:
    """One URL for display, its credentials masked (``"-"`` for None or empty)."""
    return redact(url) if url else "-"


class RedactFilter(logging.Filter):
    """A handler filter that masks credentials in the record's message and traceback text
    (for the CLIs' ``logging.basicConfig`` handlers; services redact in their log queue)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None
        return True


def redact_root_handlers() -> None:
    """Put :class:`RedactFilter` on every handler of the root logger (after ``basicConfig``)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
