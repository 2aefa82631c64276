"""Short, masked quotes of a user's file in error messages.

aevb quotes a field it could not read so the user finds it, but a file it did not write may be
anything (a config holding ``API_KEY=...``, /etc/shadow through a link). ``excerpt`` keeps at most
``limit`` characters and cuts a ``NAME=value`` / ``name: value`` field after its separator, so an
error shows ``'API_KEY=…'`` and never the value; ``redact`` drops every quoted excerpt from a
message before it goes into a report file.
"""

from __future__ import annotations

import re

_SEPARATOR = re.compile(r"[=:]")


def excerpt(text: object, limit: int = 12) -> str:
    """``repr``-style quote of at most ``limit`` printable characters, masked after ``=`` or ``:``."""
    s = "".join(c if c.isprintable() else "?" for c in str(text))
    cut = _SEPARATOR.search(s)
    if cut and cut.end() < len(s):
        s = s[:cut.end()][:limit] + "…"
    elif len(s) > limit:
        s = s[:limit] + "…"
    return "'" + s.replace("'", "\\'") + "'"


def redact(message: str) -> str:
    """The message with every quoted excerpt replaced by '…' (for HTML reports and logs kept on disk)."""
    return re.sub(r"'(?:[^'\\]|\\.)*'", "'…'", message)
