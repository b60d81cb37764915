"""A VM's log: libvirt-style lifecycle lines from qemud, interleaved with QEMU's own output.

    2026-11-25 15:30:00.123+0000: starting: qemu-system-x86_64 -name guest=t1 ...
    2026-11-25 15:30:00.125+0000: started pid 4242

Writing never raises: a full disk or an I/O error is logged through Python's logging and
forgotten, so it can never stop a start, a stop or the handling of an exit.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

LIFECYCLE_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: ")
"""Matches the lines qemud writes, to tell them from QEMU's output."""

MAX_QEMU_MESSAGE = 4096
"""How much of QEMU's output `VmLog.qemu_output` quotes at most."""


def format_log_line(wall: float, text: str) -> str:
    """Format one lifecycle line like libvirt: ``2026-11-25 15:30:00.123+0000: text``."""
    stamp = datetime.fromtimestamp(wall, UTC)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{stamp.microsecond // 1000:03d}+0000: {text}\n"


class VmLog:
    """The log file of one VM (`<log>/<name>.log`), appended to, 0600."""

    def __init__(self, path: Path, name: str, wall_clock: Callable[[], float]) -> None:
        self.path = path
        self.name = name
        self.wall_clock = wall_clock
        self.failures = 0
        """How many lines could not be written."""

    def write(self, text: str) -> None:
        """Append a timestamped lifecycle line (and say it to Python's log); never raises."""
        logger.info("VM %s: %s", self.name, text)
        line = format_log_line(self.wall_clock(), text)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            self._failed(err)
            return
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # QEMU's last output was cut short: our line on its own
            os.write(fd, line.encode())
        except OSError as err:
            self._failed(err)
        finally:
            os.close(fd)

    def _failed(self, err: OSError) -> None:
        """Count and report a line that could not be written."""
        self.failures += 1
        logger.warning("VM %s: cannot write %s: %s", self.name, self.path, err)

    def size(self) -> int:
        """The log's current size (0 when it cannot be read): where QEMU's next output starts."""
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def qemu_output(self, since: int) -> str:
        """What QEMU printed after offset `since`, without qemud's lines; at most 4 KiB."""
        try:
            with open(self.path, "rb") as log:
                log.seek(since)
                raw = log.read()
        except OSError:
            return ""
        lines = [line.rstrip() for line in raw.decode("utf-8", "replace").splitlines()
                 if line.strip() and not LIFECYCLE_LINE.match(line)]
        return "\n".join(lines)[-MAX_QEMU_MESSAGE:]
