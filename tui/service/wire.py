"""QMP on a client's socket: a stream of JSON values (not lines: qemu.qmp sends each command
without a trailing newline), cut into messages with a size limit, and the messages the service
itself writes."""

from __future__ import annotations

import json
import re
from typing import Any

#: The largest message a client may send; a larger one costs the client its connection.
MAX_MESSAGE = 1 << 20

_OUTSIDE = re.compile(rb'[{}\[\]"]')
_INSIDE_STRING = re.compile(rb'["\\]')
_BLANK = b" \t\r\n"


class BadInput(Exception):
    """What a client sent is not a stream of QMP JSON objects (or is too large)."""


class JsonStream:
    """Cuts the bytes a client sends into JSON objects, as QEMU's own streamer does: by
    counting brackets outside strings, so a value is parsed once, when it is complete."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._buf = b""
        self._limit = limit
        self._pos = 0  # scanned up to here
        self._depth = 0
        self._in_string = False

    def feed(self, data: bytes) -> list[Any]:
        """The complete values in ``data`` (with what came before); :class:`BadInput` when the
        stream cannot be QMP."""
        self._buf += data
        out: list[Any] = []
        while (value := self._next()) is not None:
            out.append(value)
        if len(self._buf) > self._limit:
            raise BadInput(f"a message larger than {self._limit} bytes")
        return out

    def _next(self) -> Any:
        buf = self._buf
        if self._depth == 0 and not self._in_string:
            start = len(buf) - len(buf.lstrip(_BLANK))
            if start == len(buf):
                self._buf, self._pos = b"", 0
                return None
            if buf[start:start + 1] != b"{":
                raise BadInput("not a JSON object")
            buf = self._buf = buf[start:]
            self._pos = 0
        end = self._scan(buf)
        if end is None:
            return None
        raw, self._buf, self._pos = buf[:end], buf[end:], 0
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadInput("not JSON") from None

    def _scan(self, buf: bytes) -> int | None:
        """The end of the object that starts ``buf``, or None when it is not complete yet."""
        pos = self._pos
        while True:
            pattern = _INSIDE_STRING if self._in_string else _OUTSIDE
            match = pattern.search(buf, pos)
            if match is None:
                self._pos = len(buf)
                return None
            char, pos = match.group(), match.end()
            if self._in_string:
                if char == b"\\":
                    if pos >= len(buf):  # the escaped character has not arrived yet
                        self._pos = pos - 1
                        return None
                    pos += 1
                else:
                    self._in_string = False
            elif char == b'"':
                self._in_string = True
            elif char in b"{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return pos
                if self._depth < 0:
                    raise BadInput("unbalanced brackets")


def encode(message: dict[str, Any]) -> bytes:
    """One message as QEMU writes it: compact JSON and CRLF."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\r\n"


def error_reply(error_class: str, desc: str, msg_id: Any = None, has_id: bool = False) -> bytes:
    """A QMP error reply (with the client's ``id`` when it gave one)."""
    reply: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
    if has_id:
        reply["id"] = msg_id
    return encode(reply)
