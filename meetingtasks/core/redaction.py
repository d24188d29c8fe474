"""Credentials kept out of what people read: a URL's password and a text's URLs shown with ``***``.

Errors and start-up lines go to terminals, CI logs and journald; a Redis URL's ``user:password@`` (or its
``?password=`` query parameter) must never reach them. Pure string work: no parsing that can fail, so a URL
that is refused because it does not parse is redacted as well as a good one.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@ ... : the password runs to the last '@' of the URL (an unescaped '@' in a password is
# how such URLs are often written, and SentinelUrl.parse reads it so); a URL ends at whitespace or a quote.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\[\]'\"]*:)[^\s'\"]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&#\s'\"]*", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``."""
    if "://" not in text and "password=" not in text.lower():
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***``, also when it does not parse."""
    return redact_text(url)
