"""The day-to-day commands: a fast `status` (tables, warnings), broken pipes, `logs`, `--once`
reports, `validate` clashes, the console's plumbing and the systemd units."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import console
from reconciler.cli import PENDING_NOTE, main
from reconciler.follow import follow, tail_offset
from reconciler.lock import DAEMON_LOCK, LAST_PASS, DirLock
from reconciler.paths import Layout
from reconciler.status import DomainStatus, FileError, StatusWriter, iso, read_status
from tests.reconciler.test_cli import INVALID, UUID, domain_xml, uuid_of, write

ROOT = Path(__file__).resolve().parents[2]
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short scratch directory (a config dir's QMP socket paths must fit in 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="qco-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(*argv: str) -> tuple[int, str, str]:
    """Run `reconcile` in-process; return exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def cli(*argv: str, text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run `python -m reconciler ARGV` to completion (output captured, as text by default)."""
    return subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=ROOT,
                          capture_output=True, text=text, timeout=60, check=False)


def buffered_env() -> dict[str, str]:
    """This environment with Python's stdout buffered, as it is by default.

    With PYTHONUNBUFFERED, a write the reader left in the middle of is cut short silently
    (CPython's unbuffered text stdout ignores short writes), so there is no broken pipe to see.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def dom(name: str, at: float | None = None, **kw: Any) -> DomainStatus:
    """A domain status as the daemon would publish it."""
    kw.setdefault("uuid", U1 if name == "a" else U2)
    kw.setdefault("file", f"/cfg/{name}.xml")
    return DomainStatus(name=name, updated_at=iso(time.time() if at is None else at) or "", **kw)


def publish(config: Path, *domains: DomainStatus, now: float | None = None) -> Layout:
    """Write the status files of `domains` under `config` with the daemon's writer."""
    layout = Layout.under(config)
    layout.ensure()
    StatusWriter(layout.status_dir).publish(list(domains), time.time() if now is None else now)
    return layout


# --- status: fast, and the same JSON as before -----------------------------------------------

HEAVY = ("pydantic", "asyncio", "lxml", "watchdog", "qemu")


@pytest.mark.parametrize("argv", [
    ["status", "--config-dir", "{dir}"],
    ["status", "--config-dir", "{dir}", "--json"],
    ["status", "--config-dir", "{dir}", "a"],
    ["logs", "--config-dir", "{dir}", "a"],
    ["--help"],
    ["status", "--help"],
])
def test_read_only_commands_import_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    layout = publish(tmp_path / "c", dom("a", state="running", pid=5))
    layout.log_file("a").write_text("a line\n")
    args = [a.replace("{dir}", str(tmp_path / "c")) for a in argv]
    code = f"""
import sys
from reconciler import cli
try:
    code = cli.main({args!r})
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
assert not heavy, heavy
raise SystemExit(code)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout  # it did print something


def test_status_json_is_what_the_models_dump(tmp_path: Path) -> None:
    layout = publish(tmp_path / "c", dom("a", state="running", pid=42, restarts=2),
                     dom("b", state="invalid", errors=(FileError(file="/cfg/b.xml", line=3,
                                                                 message="bad"),)))
    models = read_status(layout.status_dir)
    assert models is not None
    whole = {"updated_at": models.updated_at,
             "domains": [d.model_dump(mode="json") for d in models.domains]}
    code, out, _ = run("status", "--config-dir", str(tmp_path / "c"), "--json")
    assert code == 0
    assert out == json.dumps(whole, indent=2) + "\n"
    code, out, _ = run("status", "--config-dir", str(tmp_path / "c"), "--json", "b")
    assert code == 0
    assert out == json.dumps(models.domains[1].model_dump(mode="json"), indent=2) + "\n"


def test_status_json_of_an_older_status_file_has_every_field(tmp_path: Path) -> None:
    layout = publish(tmp_path / "c", dom("a", state="stopped"),
                     dom("b", state="invalid", errors=(FileError(file="/cfg/b.xml", line=3,
                                                                 message="bad"),)))
    path = layout.status_dir / "status.json"
    data = json.loads(path.read_text())
    for d in data["domains"]:  # as a reconciler without these fields would have written it
        del d["pending_restart"], d["next_retry_at"]
        for e in d["errors"]:
            del e["line"]
    path.write_text(json.dumps(data, indent=2) + "\n")
    models = read_status(layout.status_dir)  # pydantic fills in the defaults
    assert models is not None
    code, out, _ = run("status", "--config-dir", str(tmp_path / "c"), "--json")
    assert code == 0
    assert out == json.dumps({"updated_at": models.updated_at,
                              "domains": [d.model_dump(mode="json") for d in models.domains]},
                             indent=2) + "\n"


def test_status_of_a_corrupt_file_says_so_and_exits_2(tmp_path: Path) -> None:
    layout = publish(tmp_path / "c", dom("a"))
    (layout.status_dir / "status.json").write_text('{"domains": [')
    code, out, err = run("status", "--config-dir", str(tmp_path / "c"))
    assert (code, out) == (2, "")
    assert f"cannot read {layout.status_dir / 'status.json'}: not valid JSON" in err
    assert "reconcile --once" in err


@pytest.mark.parametrize(("text", "why"), [
    ('{"domains": [5]}', "domain 0: int instead of an object"),
    ('{"domains": [{"name": "a", "state": "running", "errors": "oops"}]}',
     "domain 0: 'errors' is a str"),
    ('{"domains": [{"name": "a", "state": "running", "errors": [3]}]}',
     "domain 0: an error that is not an object"),
])
def test_status_of_valid_json_of_the_wrong_shape_says_so_and_exits_2(
        tmp_path: Path, text: str, why: str) -> None:
    """Reviewed: valid JSON with wrong types inside ended in a traceback."""
    layout = publish(tmp_path / "c", dom("a"))
    (layout.status_dir / "status.json").write_text(text)
    code, out, err = run("status", "--config-dir", str(tmp_path / "c"))
    assert (code, out) == (2, "")
    assert f"not a status file ({why})" in err, err


# --- status: the table ---------------------------------------------------------------------------


def table(tmp_path: Path, *domains: DomainStatus) -> list[str]:
    """The `status` table's lines for `domains` (published now, so not stale)."""
    publish(tmp_path / "c", *domains)
    code, out, err = run("status", "--config-dir", str(tmp_path / "c"))
    assert (code, err) == (0, "")
    return out.splitlines()


def test_table_marks_a_pending_restart_and_says_what_it_means(tmp_path: Path) -> None:
    lines = table(tmp_path, dom("a", state="running", desired="running", pid=7,
                                pending_restart=True), dom("b", state="stopped"))
    assert lines[0].split() == ["NAME", "STATE", "DESIRED", "PID", "RESTARTS", "REASON"]
    assert lines[1].split()[:4] == ["a", "running*", "running", "7"]
    assert lines[2].split()[:2] == ["b", "stopped"]
    assert lines[-1] == PENDING_NOTE
    assert "restart pending" in PENDING_NOTE


def test_table_without_a_pending_restart_has_no_note(tmp_path: Path) -> None:
    lines = table(tmp_path, dom("a", state="running", pid=7))
    assert len(lines) == 2
    assert "*" not in lines[1]


def test_table_shows_the_first_error_as_file_line_message(tmp_path: Path) -> None:
    errors = (FileError(file="/cfg/a.xml", line=6, message="<vcpu>: '0' is too small"),
              FileError(file="/cfg/a.xml", line=9, message="second"),
              FileError(file="/cfg/a.xml", line=12, message="third"))
    lines = table(tmp_path, dom("a", state="running", pid=7, reason="kept running the "
                                "definition in use", errors=errors))
    assert lines[1].endswith("kept running the definition in use; "
                             "/cfg/a.xml:6: <vcpu>: '0' is too small "
                             "(+2 more: reconcile status a --json)")


def test_table_does_not_repeat_an_error_the_reason_quotes(tmp_path: Path) -> None:
    lines = table(tmp_path, dom("b", state="invalid", reason="the file is invalid: /cfg/b.xml:4: "
                                "bad", errors=(FileError(file="/cfg/b.xml", line=4,
                                                         message="bad"),)))
    assert lines[1].endswith("  the file is invalid: /cfg/b.xml:4: bad")


def test_table_shows_why_qemu_paused_a_vm_and_when_a_crash_loop_retries(tmp_path: Path) -> None:
    lines = table(tmp_path,
                  dom("a", state="paused", pid=7, reason="QEMU paused it: io-error"),
                  dom("b", state="crash-loop", desired="running", restarts=4,
                      reason="last exit: crash", next_retry_at="2030-01-01T00:00:16.000Z"))
    assert lines[1].endswith("QEMU paused it: io-error")
    assert lines[2].endswith("last exit: crash (next start at 2030-01-01T00:00:16.000Z)")


# --- status: stale status --------------------------------------------------------------------------


def test_an_old_status_nobody_updates_gets_a_warning_with_the_fix(tmp_path: Path) -> None:
    old = time.time() - 300
    publish(tmp_path / "c", dom("a", at=old), now=old)
    code, out, err = run("status", "--config-dir", str(tmp_path / "c"))
    assert code == 0
    assert out.splitlines()[1].startswith("a ")
    assert err.startswith("reconcile: warning: this status is from ")
    assert "(5 min ago)" in err
    assert "no reconciler has updated it" in err
    conf = tmp_path / "c"
    assert f"'reconcile --config-dir {conf}'" in err and \
        f"'reconcile --config-dir {conf} --once'" in err  # the directory in use
    # the same with --json: the warning is on stderr, the JSON untouched
    code, out, err2 = run("status", "--config-dir", str(tmp_path / "c"), "--json")
    assert code == 0 and err2 == err
    assert json.loads(out)["domains"][0]["name"] == "a"


def test_an_old_status_of_an_idle_daemon_gets_no_warning_unless_the_daemon_is_hung(tmp_path: Path) -> None:
    old = time.time() - 300
    layout = publish(tmp_path / "c", dom("a", at=old), now=old)
    holder = subprocess.Popen(  # another process holds the daemon lock, as a daemon does
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from reconciler.lock import DirLock; "
         f"lock = DirLock(Path({str(layout.run_dir / DAEMON_LOCK)!r}), record_pid=True); "
         "assert lock.try_acquire(); print('held', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert DirLock(layout.run_dir / DAEMON_LOCK).held_elsewhere()
        code, _, err = run("status", "--config-dir", str(tmp_path / "c"))
        assert (code, err) == (0, "")
        # its heartbeat is recent: still no warning
        beat = layout.run_dir / LAST_PASS
        beat.touch()
        code, _, err = run("status", "--config-dir", str(tmp_path / "c"))
        assert (code, err) == (0, "")
        # ... but a daemon that holds the lock and has done no pass for 5 min is hung
        os.utime(beat, (old, old))
        code, out, err = run("status", "--config-dir", str(tmp_path / "c"))
        assert code == 0 and out.splitlines()[1].startswith("a ")
        assert err.startswith(f"reconcile: warning: the daemon (pid {holder.pid}) serving "), err
        assert "has not completed a pass for 5 min" in err and "may be hung" in err, err
        # ... unless the daemon said it passes only every 300 s (--resync 300): not yet
        beat.write_text("300\n")
        os.utime(beat, (old, old))
        code, _, err = run("status", "--config-dir", str(tmp_path / "c"))
        assert (code, err) == (0, ""), err
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    code, _, err = run("status", "--config-dir", str(tmp_path / "c"))  # gone: stale again
    assert "no reconciler has updated it" in err


@pytest.mark.parametrize("at", [0.0, 1.5, 951782400.25, 1764745207.594, 4102444800.999,
                                -31536000.0, 1709164800.0, 1735689599.999])
def test_the_age_of_a_status_is_computed_without_datetime(at: float) -> None:
    from datetime import datetime

    from reconciler.cli import _age, _epoch

    stamp = iso(at)
    assert stamp is not None
    assert _epoch(stamp) == pytest.approx(datetime.fromisoformat(stamp).timestamp(), abs=1e-6)
    assert _age(stamp, at + 30.0) == pytest.approx(30.0, abs=1e-6)


@pytest.mark.parametrize("stamp", ["2026-12-03T07:00:07+00:00", "2026-12-03 07:00:07.5Z",
                                   "garbage", "2026-13-03T07:00:07.000Z", ""])
def test_other_stamps_are_read_by_datetime_or_not_at_all(stamp: str) -> None:
    from datetime import datetime

    from reconciler.cli import _age, _epoch

    assert _epoch(stamp) is None
    try:
        expected: float | None = 100.0 - datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        expected = None
    assert _age(stamp, 100.0) == expected


def test_a_recent_status_gets_no_warning_and_resync_sets_the_limit(tmp_path: Path) -> None:
    at = time.time() - 20
    publish(tmp_path / "c", dom("a", at=at), now=at)
    assert run("status", "--config-dir", str(tmp_path / "c"))[2] == ""
    assert "warning" in run("--resync", "10", "status", "--config-dir", str(tmp_path / "c"))[2]


# --- broken pipes -------------------------------------------------------------------------------


def closed_pipe_run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m reconciler ARGV` with stdout a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=ROOT,
                              stdout=write_end, stderr=subprocess.PIPE, env=buffered_env(),
                              timeout=60, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("argv", [
    ["status", "--schema"],
    ["status", "--config-dir", "{dir}"],
    ["status", "--config-dir", "{dir}", "--json"],
    ["logs", "--config-dir", "{dir}", "a"],
    ["validate", str(ROOT / "samples")],
    ["--help"],
])
def test_a_reader_gone_ends_quietly_with_141(tmp_path: Path, argv: list[str]) -> None:
    layout = publish(tmp_path / "c", dom("a"))
    layout.log_file("a").write_text("x\n" * 1000)
    done = closed_pipe_run([a.replace("{dir}", str(tmp_path / "c")) for a in argv])
    assert done.returncode == 141
    assert b"Traceback" not in done.stderr and b"Broken" not in done.stderr, done.stderr


@pytest.mark.skipif(shutil.which("head") is None, reason="needs head")
def test_status_piped_into_head_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    # 3,000 rows are ~200 KiB: far more than a pipe holds, so head leaves while we still write
    publish(tmp_path / "c", *(dom(f"vm{i:04d}", state="stopped") for i in range(3000)))
    done = subprocess.run(
        ["bash", "-c", "set -o pipefail; \"$@\" | head -1", "sh", sys.executable, "-m",
         "reconciler", "status", "--config-dir", str(tmp_path / "c")],
        cwd=ROOT, capture_output=True, text=True, env=buffered_env(), timeout=60, check=False)
    assert done.stdout.split() == ["NAME", "STATE", "DESIRED", "PID", "RESTARTS", "REASON"]
    assert done.stderr == ""
    assert done.returncode == 141
    schema = subprocess.run(
        ["bash", "-c", "\"$@\" | head -1", "sh", sys.executable, "-m", "reconciler", "status",
         "--schema"], cwd=ROOT, capture_output=True, text=True, env=buffered_env(), timeout=60,
        check=False)
    assert (schema.stdout, schema.stderr, schema.returncode) == ("{\n", "", 0)


# --- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def logdir(tmp_path: Path) -> Layout:
    """A config directory whose VM `a` has a log and a console log."""
    layout = Layout.under(tmp_path / "c")
    layout.ensure()
    layout.log_file("a").write_bytes(b"one\ntwo\nthree\n")
    layout.console_log("a").write_bytes(b"login: \xff\r\n")
    return layout


def test_logs_prints_the_vm_log_or_the_console_log(logdir: Layout) -> None:
    conf = str(logdir.config_dir)
    assert run("logs", "--config-dir", conf, "a") == (0, "one\ntwo\nthree\n", "")
    assert run("logs", "--config-dir", conf, "a", "-n", "2") == (0, "two\nthree\n", "")
    assert run("logs", "--config-dir", conf, "a", "--console") == (0, "login: \ufffd\r\n", "")
    raw = cli("logs", "--config-dir", conf, "a", "--console", text=False)
    assert raw.stdout == b"login: \xff\r\n"  # bytes as they are, to a real stdout


def test_logs_of_an_unknown_vm_exits_1_naming_the_path(logdir: Layout) -> None:
    code, out, err = run("logs", "--config-dir", str(logdir.config_dir), "b")
    assert (code, out) == (1, "")
    assert str(logdir.log_file("b")) in err
    assert "'reconcile status'" in err
    assert run("logs", "--config-dir", str(logdir.config_dir), "../a")[0] == 2


@pytest.mark.parametrize(("data", "lines", "expected"), [
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),
    (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 0, b""),
    (b"", 3, b""),
    (b"\n\n\n", 1, b"\n"),
    (b"x" * 200000 + b"\nlast\n", 1, b"last\n"),
    (b"y\n" + b"x" * 200000 + b"\nlast\n", 2, b"x" * 200000 + b"\nlast\n"),
])
def test_tail_offset_is_where_the_last_lines_start(tmp_path: Path, data: bytes, lines: int,
                                                   expected: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data[tail_offset(fd, lines):] == expected
    finally:
        os.close(fd)


class Script:
    """A `sleep` for `follow` that runs the next step instead of sleeping, then stops it."""

    def __init__(self, *steps: Callable[[], None]) -> None:
        self.steps = list(steps)

    def __call__(self, seconds: float) -> None:
        if not self.steps:
            raise KeyboardInterrupt
        self.steps.pop(0)()


def followed(path: Path, *steps: Callable[[], None], lines: int | None = None
             ) -> tuple[bytes, list[str]]:
    """Everything `follow` writes while the steps change the file, and its notes."""
    got: list[bytes] = []
    notes: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        follow(path, got.append, notes.append, lines=lines, sleep=Script(*steps))
    return b"".join(got), notes


def append(path: Path, data: bytes) -> Callable[[], None]:
    def step() -> None:
        with path.open("ab") as fh:
            fh.write(data)
    return step


def test_follow_prints_what_is_appended(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"1\n2\n3\n")
    out, notes = followed(log, append(log, b"4\n"), lambda: None, append(log, b"5\n"), lines=1)
    assert (out, notes) == (b"3\n4\n5\n", [])


def test_follow_waits_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    out, notes = followed(log, lambda: None, append(log, b"born\n"), append(log, b"more\n"))
    assert out == b"born\nmore\n"
    assert notes == [f"waiting for {log} to appear"]


def test_follow_reads_a_rotated_log_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old\n")

    def rotate() -> None:
        with log.open("ab") as old:
            log.rename(tmp_path / "a.log.1")
            old.write(b"last words\n")  # QEMU still writes to the old file for a moment
        log.write_bytes(b"new\n")

    out, notes = followed(log, rotate, append(log, b"newer\n"))
    assert out == b"old\nlast words\nnew\nnewer\n"
    assert notes == [f"{log} was replaced; following the new file"]


def test_follow_rereads_a_truncated_log(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"before the cut\n")

    def truncate() -> None:  # logrotate's copytruncate, then the writer goes on
        with log.open("r+b") as fh:
            fh.truncate(0)
        log.write_bytes(b"after\n")

    out, notes = followed(log, truncate)
    assert out == b"before the cut\nafter\n"
    assert notes == [f"{log} was truncated; reading it from the start"]


def test_logs_follow_ends_with_0_on_ctrl_c(logdir: Layout) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "logs", "--config-dir", str(logdir.config_dir),
         "a", "-f", "-n", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"three\n"
        with logdir.log_file("a").open("ab") as fh:
            fh.write(b"four\n")
        assert proc.stdout.readline() == b"four\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


# --- --once and --dry-run report every file error -------------------------------------------------


def test_once_prints_every_file_error_as_file_line_message(tmp_path: Path) -> None:
    conf = tmp_path / "c"
    conf.mkdir(mode=0o700)
    bad = write(conf / "bad.xml", INVALID)
    write(conf / "good.xml", domain_xml("good", uuid=uuid_of("good")))
    code, out, err = run("--config-dir", str(conf), "--once")
    assert code == 1
    errors = [f"{bad}:6: <vcpu>: '0' is too small; the minimum is 1",
              f"{bad}:7: <sound> inside <domain> is not supported by qemud; remove it or see "
              "README for what is"]
    assert out.splitlines()[-2:] == errors
    assert str(bad) not in err  # each once: in the report, not in the narration on stderr too
    assert [line for line in out.splitlines() if line in errors] == errors
    code, out, err = run("--config-dir", str(conf), "--once", "--dry-run")
    assert code == 1
    assert out.splitlines()[-2:] == errors
    assert str(bad) not in err


SHARED_DISK = ("<disk type='file' device='disk'><source file='/img/shared.qcow2'/>"
               "<target dev='vda' bus='virtio'/></disk>")
RUNNING = ("  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running'/></metadata>\n")


@pytest.mark.parametrize(("files", "code"), [
    ({"a.xml": domain_xml("a", uuid=uuid_of("a"))}, 0),
    ({"a.xml": domain_xml("a", uuid=uuid_of("a")), "bad.xml": INVALID}, 1),
    ({"a.xml": domain_xml("a", uuid=uuid_of("a")), "b.xml": domain_xml("a", uuid=uuid_of("b"))},
     1),
    # a writable disk image both want while running: --once keeps one stopped, exits 1
    ({"a.xml": domain_xml("a", uuid=uuid_of("a"), devices=SHARED_DISK, extra=RUNNING),
      "b.xml": domain_xml("b", uuid=uuid_of("b"), devices=SHARED_DISK, extra=RUNNING)}, 1),
    # ... but not when only one of them wants to run
    ({"a.xml": domain_xml("a", uuid=uuid_of("a"), devices=SHARED_DISK, extra=RUNNING),
      "b.xml": domain_xml("b", uuid=uuid_of("b"), devices=SHARED_DISK)}, 0),
])
def test_dry_run_exits_1_when_a_file_is_invalid_or_in_conflict(
        tmp_path: Path, files: dict[str, str], code: int) -> None:
    conf = tmp_path / "c"
    conf.mkdir(mode=0o700)
    for name, text in files.items():
        write(conf / name, text)
    before = sorted(p.name for p in conf.iterdir())
    got, out, _ = run("--config-dir", str(conf), "--once", "--dry-run")
    assert got == code
    if code:
        assert re.search(rf"^{re.escape(str(conf))}/b(ad)?\.xml:\d+: ", out, re.M), out
    assert not (conf / "status" / "status.json").exists()  # a dry run publishes nothing
    assert sorted(p.name for p in conf.iterdir() if p.suffix == ".xml") == [
        n for n in before if n.endswith(".xml")]


@pytest.mark.parametrize("kind", ["name", "uuid"])
def test_once_reports_a_clash_at_the_lines_of_both_files_once_each(tmp_path: Path,
                                                                   kind: str) -> None:
    """`--once` prints each side of a clash as `file:line: message` naming the other file's
    line; the table says it once per row (no reason repeated as an error); the loser shows
    the state its file asks for."""
    conf = tmp_path / "c"
    conf.mkdir(mode=0o700)
    write(conf / "a.xml", domain_xml("web", uuid=uuid_of("a")))
    if kind == "name":
        write(conf / "b.xml", domain_xml("web", uuid=uuid_of("b"), extra=RUNNING))
    else:
        write(conf / "b.xml", domain_xml("other", uuid=uuid_of("a"), extra=RUNNING))
    code, out, _ = run("--config-dir", str(conf), "--once")
    assert code == 1
    element = "name" if kind == "name" else "uuid"
    line_a = next(i for i, t in enumerate((conf / "a.xml").read_text().splitlines(), 1)
                  if f"<{element}>" in t)
    line_b = next(i for i, t in enumerate((conf / "b.xml").read_text().splitlines(), 1)
                  if f"<{element}>" in t)
    assert re.search(rf"^{conf}/b\.xml:{line_b}: .* is also used by {conf}/a\.xml:{line_a}, "
                     "which wins", out, re.M), out
    assert re.search(rf"^{conf}/a\.xml:{line_a}: .* is also used by {conf}/b\.xml:{line_b}, "
                     "which stays stopped", out, re.M), out
    loser_row = next(t for t in out.splitlines() if " conflict " in t)
    assert loser_row.count("is also used by") == 1, loser_row
    assert loser_row.split()[2] == "running"  # DESIRED: what b.xml asks for


def test_stop_of_a_name_whose_file_is_invalid_lists_the_invalid_files_and_the_way_out(
        tmp_path: Path) -> None:
    conf = tmp_path / "c"
    conf.mkdir(mode=0o700)
    write(conf / "web.xml", INVALID)
    code, _, err = run("--config-dir", str(conf), "stop", "web")
    assert code == 1
    assert re.search(rf"^{conf}/web\.xml:\d+: ", err, re.M), err
    # reviewed: it pointed at `stop --force`, which refuses that VM: the way out is the file
    assert "fix the file (with state='stopped' to stop the VM), or delete the file" in err, err


def test_stop_no_wait_needs_force(tmp_path: Path) -> None:
    code, _, err = run("--config-dir", str(tmp_path / "c"), "stop", "web", "--no-wait")
    assert code == 2 and "--no-wait goes with --force" in err, err


# --- validate: clashes between the files given, and ACPI --------------------------------------------


def test_validate_reports_a_name_clash_at_both_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.xml", domain_xml("web", uuid=uuid_of("a")))
    b = write(tmp_path / "b.xml", domain_xml("web", uuid=uuid_of("b")))
    c = write(tmp_path / "c.xml", domain_xml("other", uuid=uuid_of("c")))
    code, out, err = run("validate", str(tmp_path))
    assert code == 1
    assert out == f"{c}: valid (other, {uuid_of('c')})\n"
    fix = "give each domain its own <name>"
    assert err.splitlines() == [f"{a}:2: error: name 'web' is also used by {b}:2; {fix}",
                                f"{b}:2: error: name 'web' is also used by {a}:2; {fix}",
                                "2 of 3 file(s) invalid"]


def test_validate_reports_a_uuid_clash_in_json_too(tmp_path: Path) -> None:
    a = write(tmp_path / "a.xml", domain_xml("a"))
    b = write(tmp_path / "b.xml", domain_xml("b"))
    code, out, _ = run("validate", "--json", str(a), str(b))
    assert code == 1
    records = json.loads(out)
    assert [r["valid"] for r in records] == [False, False]
    assert records[0]["errors"] == [{"line": 3, "message": (
        f"uuid {records[0]['uuid']} is also used by {b}:3; give each domain its own <uuid> "
        "(or none: it is derived from the name)")}]
    assert records[1]["errors"][0]["message"].startswith(f"uuid {records[0]['uuid']} is also "
                                                         f"used by {a}:3")


def test_validate_same_file_twice_is_no_clash(tmp_path: Path) -> None:
    a = write(tmp_path / "a.xml", domain_xml("a"))
    assert run("validate", str(a), str(tmp_path))[0] == 0


def disk(path: Path | str, extra: str = "") -> str:
    """A virtio disk of image `path` (with `extra` inside, e.g. <readonly/>)."""
    return (f"<disk type='file' device='disk'><source file='{path}'/>"
            f"<target dev='vda' bus='virtio'/>{extra}</disk>")


RUNNING = ("  <metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running'/></metadata>\n")


@pytest.mark.parametrize(("a_running", "b_running", "b_extra", "outcome"), [
    (True, True, "", "error"),
    (True, False, "", "warning"),
    (False, False, "", "warning"),
    (True, True, "<readonly/>", None),
    (True, True, "<shareable/>", None),
])
def test_validate_reports_a_disk_image_two_files_write(
        tmp_path: Path, a_running: bool, b_running: bool, b_extra: str,
        outcome: str | None) -> None:
    image = tmp_path / "disk.img"
    image.touch()
    link = tmp_path / "alias.img"
    link.symlink_to(image)  # another spelling of the same image
    a = write(tmp_path / "a.xml", domain_xml("a", uuid=uuid_of("a"), devices=disk(image),
                                             extra=RUNNING if a_running else ""))
    b = write(tmp_path / "b.xml", domain_xml("b", uuid=uuid_of("b"), devices=disk(link, b_extra),
                                             extra=RUNNING if b_running else ""))
    def line(path: Path) -> int:
        """The line of the <disk> element in `path`."""
        return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "<disk" in text)

    code, out, err = run("validate", "--json", str(tmp_path))
    records = {Path(r["file"]).name: r for r in json.loads(out)}
    both_ways = [(records["a.xml"], b), (records["b.xml"], a)]
    if outcome is None:
        assert code == 0 and all(r["errors"] == r["warnings"] == [] for r, _ in both_ways)
        return
    for rec, other in both_ways:
        found = rec["errors" if outcome == "error" else "warnings"]
        assert len(found) == 1, rec
        mine = a if rec["file"] == str(a) else b
        assert found[0]["line"] == line(mine)
        assert found[0]["message"].startswith(
            f"disk image {image} is also written by {other}:{line(other)}")
        assert rec["valid"] is (outcome == "warning")
    assert code == (1 if outcome == "error" else 0)
    code, _, err = run("validate", str(a), str(b))
    assert (f"{a}:{line(a)}: {outcome}: disk image {image} is also written by {b}:{line(b)}"
            in err)


def test_validate_reports_a_uefi_variable_store_two_files_write(tmp_path: Path) -> None:
    """A copied domain file keeps the first one's <nvram>: QEMU would not stop two writers."""
    store = tmp_path / "shared_VARS.fd"
    os_ = ("<os><type arch='x86_64' machine='q35'>hvm</type>\n"
           "    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\n"
           f"    <nvram>{store}</nvram></os>")
    files = []
    for name in ("a", "b"):
        text = domain_xml(name, uuid=uuid_of(name), extra=RUNNING, devices=disk(
            tmp_path / f"{name}.img")).replace(
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>", os_)
        files.append(write(tmp_path / f"{name}.xml", text))
    a, b = files
    code, _, err = run("validate", str(a), str(b))
    assert code == 1
    assert f"{a}:7: error: disk image {store} is also written by {b}:7" in err
    assert f"{b}:7: error: disk image {store} is also written by {a}:7" in err


def test_validate_warns_about_a_domain_without_acpi(tmp_path: Path) -> None:
    bare = write(tmp_path / "bare.xml", domain_xml("bare", acpi=False))
    code, out, err = run("validate", str(bare))
    assert code == 0
    assert out == f"{bare}: valid (bare, {UUID})\n"
    assert err == (f"{bare}:1: warning: no <acpi/> in <features>: a graceful stop can never "
                   "work; qemud will quit it at once (add <acpi/> to <features> to let the "
                   "guest shut down cleanly)\n")
    featured = write(tmp_path / "f.xml", domain_xml("f", uuid=uuid_of("f"), acpi=False).replace(
        "<!-- no features -->", "<features><apic/></features>"))
    assert run("validate", str(featured))[2].startswith(f"{featured}:6: warning: no <acpi/>")
    assert run("validate", str(write(tmp_path / "g.xml", domain_xml("g"))))[2] == ""


# --- console: finding it, and the copy loop ---------------------------------------------------------


def test_chardev_options_find_serial_0_and_undo_double_commas() -> None:
    argv = ["qemu", "-chardev", "socket,id=charmonitor,path=/r/qmp.sock,server=on,wait=off",
            "-chardev", "socket,id=charserial0,path=/a,,b/s.sock,server=on,wait=off",
            "-device", "isa-serial,chardev=charserial0"]
    assert console.chardev_options(argv) == {"backend": "socket", "id": "charserial0",
                                             "path": "/a,b/s.sock", "server": "on",
                                             "wait": "off"}
    assert console.chardev_options(["qemu", "-chardev", "pty,id=charchannel0"]) is None


def test_the_last_pty_line_of_the_log_wins(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"2026-01-01 starting: qemu\n"
                    b"2026-01-01T00:00:00Z char device redirected to /dev/pts/3 (label "
                    b"charserial0)\n"
                    b"char device redirected to /dev/pts/9 (label charchannel0)\n"
                    b"2026-01-02 starting: qemu\n"
                    b"char device redirected to /dev/pts/5 (label charserial0)\n")
    assert console.pty_from_log(log) == Path("/dev/pts/5")
    assert console.pty_from_log(tmp_path / "none.log") is None


def test_console_of_a_vm_that_is_not_running_exits_1(tmp_path: Path) -> None:
    publish(tmp_path / "c", dom("a", state="stopped"))
    code, out, err = run("console", "--config-dir", str(tmp_path / "c"), "a")
    assert (code, out) == (1, "")
    assert err == "reconcile: a is not running (state stopped); start it with " \
                  "'reconcile start a'\n"
    code, _, err = run("console", "--config-dir", str(tmp_path / "c"), "zz")
    assert code == 1 and "no domain named 'zz'" in err


def test_console_does_not_believe_a_pty_line_from_an_earlier_run(tmp_path: Path) -> None:
    # this very process plays QEMU: it holds one pty; the log names another one
    layout = publish(tmp_path / "c", dom("a", state="running", pid=os.getpid()))
    master, slave = os.openpty()
    other_master, other_slave = os.openpty()
    stale = os.ttyname(other_slave)
    os.close(other_master)
    os.close(other_slave)
    try:
        layout.vm_dir(U1).mkdir(mode=0o700)
        layout.pidfile(U1).write_text(f"{os.getpid()}\n")
        layout.log_file("a").write_text(
            f"char device redirected to {stale} (label charserial0)\n")
        argv = ["qemu", "-uuid", U1, "-chardev", "pty,id=charserial0"]
        opts = console.chardev_options(argv)
        assert opts is not None and opts["backend"] == "pty"
        held = console.pty_indexes(os.getpid())
        assert held is None or int(os.ttyname(slave).rsplit("/", 1)[1]) in held
        if held is None:
            pytest.skip("this kernel does not show tty-index in fdinfo")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(console, "qemu_cmdline", lambda pid, uuid: argv)
            with pytest.raises(console.ConsoleError, match="from an earlier run"):
                console.find_console(layout, "a", [dom("a", state="running").model_dump()])
            layout.log_file("a").write_text(
                f"char device redirected to {os.ttyname(slave)} (label charserial0)\n")
            assert console.find_console(layout, "a", [dom("a").model_dump()]) == \
                console.Endpoint("pty", Path(os.ttyname(slave)))
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def guest_socket(tmp_path: Path) -> Iterator[tuple[Path, list[bytes], threading.Event]]:
    """A unix socket playing a guest's serial port: greets, then echoes each chunk upper-cased."""
    path = tmp_path / "serial.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    got: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        # the console may hang up with our echo unread: a reset is its end of the line too
        with conn, contextlib.suppress(ConnectionResetError):
            conn.sendall(b"login: ")
            while chunk := conn.recv(100):
                got.append(chunk)
                with contextlib.suppress(OSError):
                    conn.sendall(chunk.upper())
        done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, got, done
    server.close()


def test_attach_copies_both_ways_and_ctrl_bracket_detaches(
        guest_socket: tuple[Path, list[bytes], threading.Event]) -> None:
    path, got, done = guest_socket
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(
        console.attach(console.Endpoint("unix", path), in_r, out_w)))
    worker.start()
    try:
        assert os.read(out_r, 100) == b"login: "
        os.write(in_w, b"root\r")
        seen = b""
        while b"ROOT\r" not in seen:
            seen += os.read(out_r, 100)
        os.write(in_w, b"ls\x1dnot sent")
        worker.join(timeout=30)
        assert result == ["detached"]
        assert done.wait(timeout=30)  # we hung up: the "guest" saw the end of the connection
        assert b"".join(got) == b"root\rls"
    finally:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)


def test_attach_ends_when_the_console_goes_away(tmp_path: Path) -> None:
    path = tmp_path / "serial.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(
        console.attach(console.Endpoint("unix", path), in_r, out_w)))
    worker.start()
    try:
        conn, _ = server.accept()
        conn.sendall(b"bye\r\n")
        conn.close()  # QEMU exited
        worker.join(timeout=30)
        assert result == ["closed"]
        assert os.read(out_r, 100) == b"bye\r\n"
    finally:
        server.close()
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)


# --- systemd ------------------------------------------------------------------------------------------

UNITS = sorted((ROOT / "contrib" / "systemd").glob("*.service"))


def test_the_units_keep_vms_running_and_reload_with_sighup() -> None:
    assert [u.name for u in UNITS] == ["qemud-user.service", "qemud.service"]
    for unit in UNITS:
        text = unit.read_text()
        assert "\nKillMode=process\n" in text
        assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in text
        assert re.search(r"^Restart=on-failure$", text, re.M)
    assert re.search(r"^ExecStart=\S+/reconcile --system$", (UNITS[1]).read_text(), re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path, unit: Path) -> None:
    # verify insists the program exists: point ExecStart at this checkout's reconcile, only that
    program = shutil.which("reconcile", path=str(Path(sys.executable).parent)) or "/bin/true"
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={program}", unit.read_text(), flags=re.M)
    copy = tmp_path / unit.name
    copy.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                          capture_output=True, text=True, timeout=60, check=False)
    about_it = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0, done.stderr
    assert about_it == []


def test_daemon_log_lines_carry_no_timestamps_under_systemd(tmp_path: Path) -> None:
    conf = tmp_path / "c"
    env = dict(os.environ, INVOCATION_ID="0123456789abcdef0123456789abcdef",
               JOURNAL_STREAM="8:12345")
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "--config-dir", str(conf)],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first == f"reconcile: watching {conf} (pid {proc.pid})\n"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    for line in [first, *rest.splitlines()]:
        assert line.startswith("reconcile: "), line
        assert not re.search(r"\d\d:\d\d:\d\d", line), line


@pytest.mark.parametrize(("env", "stamped"), [
    ({"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}, False),
    ({"JOURNAL_STREAM": "8:12345"}, False),
    ({}, True),
])
def test_the_daemon_stamps_its_lines_unless_the_journal_does(
        tmp_path: Path, env: dict[str, str], stamped: bool) -> None:
    from reconciler.daemon import under_journal

    assert under_journal(env) is not stamped
    base = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    conf = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "--config-dir", str(conf)],
                            cwd=ROOT, env={**base, **env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read().splitlines()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    said = f"reconcile: watching {conf} (pid {proc.pid})\n"
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: "
    if stamped:  # like the VM log's lifecycle lines
        assert re.fullmatch(stamp + re.escape(said.rstrip("\n")), first.rstrip("\n")), first
    else:
        assert first == said
    assert rest and all(bool(re.match(stamp, line)) is stamped for line in rest), rest


def test_start_and_stop_on_a_full_disk_say_so_and_change_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewed: `stop` on a full disk ended in an OSError traceback."""
    import errno

    import reconciler.status

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = write(tmp_path / "a.xml", domain_xml("a", extra=RUNNING))
    before = path.read_bytes()
    monkeypatch.setattr(reconciler.status, "write_atomic", full)
    code, out, err = run("--config-dir", str(tmp_path), "stop", "a")
    assert code == 1 and out == ""
    assert err == (f"reconcile: cannot write {path}: No space left on device; nothing changed "
                   "(free some space, or make the folder writable, and run it again)\n")
    assert path.read_bytes() == before


def test_stop_force_no_wait_without_a_daemon_is_refused_before_the_file_changes(
        tmp_path: Path) -> None:
    """Reviewed: it wrote state='stopped', then refused with exit 2 (which says nothing changed)."""
    path = write(tmp_path / "a.xml", domain_xml("a", extra=RUNNING))
    before = path.read_bytes()
    code, out, err = run("--config-dir", str(tmp_path), "stop", "--force", "a", "--no-wait")
    assert code == 2 and "--no-wait needs the daemon" in err, err
    assert out == "" and path.read_bytes() == before


def test_status_warns_when_the_status_files_could_not_be_written_even_without_a_reason(
        tmp_path: Path) -> None:
    """Re-review: on a disk out of inodes the marker could not be made; it is now made at
    start and its mtime alone says since when (its text, the reason, needs room)."""
    from reconciler.lock import STATUS_UNWRITTEN

    layout = publish(tmp_path / "c", dom("a"))
    marker = layout.run_dir / STATUS_UNWRITTEN
    marker.touch()
    os.utime(marker, (0, 0))
    assert "could not be written" not in run("status", "--config-dir", str(tmp_path / "c"))[2]
    when = time.time() - 300
    os.utime(marker, (when, when))
    err = run("status", "--config-dir", str(tmp_path / "c"))[2]
    assert "could not be written for 5 min (see the daemon's log for why)" in err, err


def test_a_restart_is_refused_on_a_disk_out_of_inodes(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    from reconciler import power
    from reconciler.paths import Layout

    real = os.statvfs

    def no_inodes(path: object) -> os.statvfs_result:
        st = real(path)  # type: ignore[arg-type]
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, st.f_bfree,
                                  st.f_bavail, 1000, 0, 0, st.f_flag, st.f_namemax))

    layout = Layout.under(tmp_path)
    layout.ensure()
    assert power.room_to_start(layout) is None
    monkeypatch.setattr(os, "statvfs", no_inodes)
    assert "only 0 inodes are free" in (power.room_to_start(layout) or "")
