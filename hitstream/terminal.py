"""Text from the store made safe for an operator's terminal.

An event name, a UTM value or a path is whatever a client sent. Printed raw, an escape
sequence in it would drive the operator's terminal (move the cursor, rewrite earlier lines,
set the window title) and bidi controls would reorder what is shown, so every control
character is printed as its escape instead (``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL, and the bidi embeddings, overrides and isolates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character written as a Python-style escape."""
    return _CONTROLS.sub(lambda match: repr(match.group())[1:-1], text)


def json_for_terminal(document: str) -> str:
    """A JSON text with control characters outside JSON's own escapes (C1, DEL, bidi)
    written as ``\\uXXXX``: the same document, and nothing in it drives a terminal."""
    return _CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", document)
