"""A minimal valid domain document with fixed line numbers, for table tests of the model."""

from __future__ import annotations

import textwrap
from pathlib import Path

UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"

PARTS = {
    "name": "<name>t</name>",
    "uuid": f"<uuid>{UUID}</uuid>",
    "memory": "<memory unit='MiB'>64</memory>",
    "os": "<os><type arch='x86_64' machine='pc'>hvm</type></os>",
}


def domain_xml(extra: str = "", *, kind: str = "kvm", **parts: str | None) -> bytes:
    """A minimal valid domain: <domain> on line 1, name 2, uuid 3, memory 4, os 5, `extra` from 6.

    A part given as None is replaced by a comment, so that line numbers never move.
    """
    lines = [f"<domain type='{kind}'>"]
    for key, default in PARTS.items():
        value = parts.pop(key, default)
        lines.append(f"  {value}" if value is not None else f"  <!-- no {key} -->")
    assert not parts, parts
    lines += textwrap.dedent(extra).strip("\n").splitlines()
    lines.append("</domain>")
    return ("\n".join(lines) + "\n").encode()
