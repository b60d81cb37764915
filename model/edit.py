"""Byte-preserving edits of domain files: change the desired state and nothing else.

`reconcile start NAME` and `reconcile stop NAME` must not reformat a user's file, so the edit
works on the text: the `state` attribute of the `<qemud:desired>` element is replaced in place
(or added to it); only a file without that element gets one, inside `<metadata>`.
"""

from __future__ import annotations

import re
from typing import Literal

from model.domain import NAMESPACE
from model.errors import InvalidDomainError, Issue
from model.parse import parse

_STATE = re.compile(rb"""(\sstate\s*=\s*)(["'])([^"']*)\2""")
_OPAQUE = re.compile(rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>", re.DOTALL)


def _masked(data: bytes) -> bytes:
    """`data` with comments, CDATA sections and processing instructions blanked, same length.

    Searching the masked copy finds only real markup (not a commented-out `<qemud:desired>`),
    and its offsets are valid in `data`.
    """
    return _OPAQUE.sub(lambda m: b" " * len(m.group(0)), data)


def _desired_tags(data: bytes) -> list[re.Match[bytes]]:
    """Start tags named `*:desired` or `desired` whose element is in qemud's namespace."""
    return list(re.finditer(rb"<(?:([A-Za-z_][\w.\-]*):)?desired\b[^>]*>", data))


def set_state(data: bytes, state: Literal["running", "stopped"], file: str | None = None) -> bytes:
    """Return `data` with the domain's desired state set to `state`; every other byte unchanged.

    The input must be a valid domain (raises `InvalidDomainError` otherwise) and so must the
    output, which is checked by parsing it.
    """
    before = parse(data, file)
    text = _masked(data)
    match = _find_desired(text)
    if before.domain.desired.state == state and match is not None:
        return data
    if match is not None:
        tag = match.group(0)
        found = _STATE.search(tag)
        if found is not None:
            new_tag = tag[:found.start(3)] + state.encode() + tag[found.end(3):]
        else:
            end = len(tag) - (2 if tag.endswith(b"/>") else 1)
            new_tag = tag[:end].rstrip() + f" state='{state}'".encode() + tag[end:]
        out = data[:match.start()] + new_tag + data[match.end():]
    else:
        element = f"<qemud:desired xmlns:qemud='{NAMESPACE}' state='{state}'/>".encode()
        meta = re.search(rb"<metadata\s*>", text)
        empty_meta = re.search(rb"<metadata\s*/>", text)
        if meta is not None:
            out = data[:meta.end()] + b"\n    " + element + data[meta.end():]
        elif empty_meta is not None:
            out = (data[:empty_meta.start()] + b"<metadata>" + element + b"</metadata>"
                   + data[empty_meta.end():])
        else:
            close = text.rfind(b"</domain>")
            if close < 0:
                raise InvalidDomainError(file, [Issue(None, "no </domain> end tag found")])
            out = (data[:close] + b"  <metadata>\n    " + element + b"\n  </metadata>\n"
                   + data[close:])
    after = parse(out, file)
    if after.domain.desired.state != state:
        raise InvalidDomainError(file, [Issue(None, "could not set the desired state in place; "
                                              "edit the <qemud:desired> element by hand")])
    return out


def _find_desired(data: bytes) -> re.Match[bytes] | None:
    """The start tag of the `<qemud:desired>` element (the one in qemud's namespace), if any."""
    for match in _desired_tags(data):
        prefix = match.group(1)
        declared = re.search(rb"xmlns" + (rb":" + re.escape(prefix) if prefix else b"")
                             + rb"""\s*=\s*(["'])""" + re.escape(NAMESPACE.encode()) + rb"\1",
                             data)
        if declared is not None:
            return match
    return None
