"""`<clock>` offsets on real QEMU: the RTC starts where libvirt's offset puts it.

QEMU starts paused with the command line (and environment) qemud renders; the pc machine's
`rtc-time` property is the RTC's date as the guest will read it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import model
from tests.support.qmp import query_paused

pytestmark = pytest.mark.qemu


def rtc_time(clock: str, tmp_path: Path, now: datetime | None = None) -> datetime:
    """The guest's RTC (naive: the RTC has no zone) of a paused QEMU with `<clock>` = `clock`."""
    data = f"""<domain type='qemu'>
  <name>clock</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  {clock}
</domain>""".encode()
    domain = model.parse(data).domain
    runtime = model.Runtime(tmp_path / "qmp.sock", tmp_path / "qemu.pid", tmp_path / "console.log")
    argv = [*model.command_line(domain, runtime, now=now), "-S"]
    (tm,) = query_paused(argv, runtime.qmp_socket, tmp_path / "qemu.log",
                         [("qom-get", {"path": "/machine", "property": "rtc-time"})],
                         env=model.environment(domain))
    return _from_tm(tm)


def _from_tm(tm: dict[str, Any]) -> datetime:
    """QEMU's `struct tm` reply as a datetime."""
    return datetime(tm["tm_year"] + 1900, tm["tm_mon"] + 1, tm["tm_mday"], tm["tm_hour"],
                    tm["tm_min"], tm["tm_sec"])


def close(a: datetime, b: datetime) -> bool:
    """Whether two RTC readings are the same time, give or take QEMU's start-up."""
    return abs((a - b).total_seconds()) < 120


def test_absolute_starts_at_its_second(tmp_path: Path) -> None:
    got = rtc_time("<clock offset='absolute' start='946684800'/>", tmp_path)
    assert close(got, datetime(2000, 1, 1))


def test_variable_moves_the_host_clock(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    got = rtc_time("<clock offset='variable' adjustment='-172800' basis='utc'/>", tmp_path, now)
    assert close(got, (now - timedelta(days=2)).replace(tzinfo=None))


def test_timezone_is_the_host_clock_in_that_zone(tmp_path: Path) -> None:
    got = rtc_time("<clock offset='timezone' timezone='&lt;+14>-14'/>", tmp_path)  # POSIX: UTC+14
    assert close(got, (datetime.now(UTC) + timedelta(hours=14)).replace(tzinfo=None))


def test_utc_is_the_host_utc(tmp_path: Path) -> None:
    got = rtc_time("<clock offset='utc'/>", tmp_path)
    assert close(got, datetime.now(UTC).replace(tzinfo=None))
