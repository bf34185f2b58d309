"""How deeply a JSON text nests, found by scanning its bytes before anything parses them.

Parsers bound nesting by their own recursion limits, which differ between Python 3.11
(about 1,000 levels, then RecursionError), Python 3.12 and later (far deeper, and slower
to fail), and pydantic's JSON parser. MAX_JSON_DEPTH is one explicit bound, the same on
every interpreter: a text nested deeper is refused before a parser sees it.
"""

from __future__ import annotations

import re
from itertools import accumulate

from broadcaster.exceptions import RejectedMessage
from broadcaster.failures import Reason
from broadcaster.settings import get_settings

__all__ = ["check", "depth", "too_deep"]

# A JSON string, escapes included; an unterminated one runs to the end (the parser then
# refuses the text). Brackets inside strings are text, not nesting.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def depth(text: bytes | str) -> int:
    """The deepest nesting of arrays and objects in `text`: 0 for a scalar, 1 for ``[]``.

    The text need not be valid JSON; what a parser would refuse anyway is counted as
    far as it goes. The work is done by the regex engine and C builtins, so it costs a
    few microseconds for an event and milliseconds for a megabyte.
    """
    data = text.encode() if isinstance(text, str) else text
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets)), default=0))


def too_deep(text: bytes | str, limit: int | None = None) -> bool:
    """Whether `text` nests deeper than `limit` (MAX_JSON_DEPTH when not given)."""
    limit = get_settings().max_json_depth if limit is None else limit
    data = text.encode() if isinstance(text, str) else text
    # No text with fewer opening brackets than the limit can nest deeper: skip the scan.
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    return depth(data) > limit


def check(data: object, limit: int | None = None, *, enclosing: int = 0) -> None:
    """Raise RejectedMessage("too-deep") if the JSON text `data` nests deeper than the limit.

    `limit` is MAX_JSON_DEPTH when not given; `enclosing` levels are added for a text that
    wraps the payload (a structured CloudEvent is one object around its data). Anything
    other than bytes or str was parsed already, under this same check, and passes.
    """
    if not isinstance(data, bytes | str):
        return
    limit = (get_settings().max_json_depth if limit is None else limit) + enclosing
    if too_deep(data, limit):
        raise RejectedMessage(
            Reason.TOO_DEEP,
            f"JSON nested {depth(data) - enclosing} levels deep, more than MAX_JSON_DEPTH ({limit - enclosing})",
        )
