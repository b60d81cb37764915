"""`reconciler.machines`: the emulator's machine list, cached by path+mtime+size, and the check
`model.parse` gets injected (errors at the `<type>` line with the closest names)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import model
from model.parse import HostFacts
from reconciler.machines import MAX_HELP_BYTES, MachineCatalog, parse_machine_help, run_machine_help
from tests.support.snippets import domain_xml

HELP = """Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
pc-i440fx-7.1        Standard PC (i440FX + PIIX, 1996)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-rhel9.2.0)
pc-q35-rhel9.2.0     RHEL-9.2.0 PC (Q35 + ICH9, 2009)
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
none                 empty machine
"""


def test_machine_help_is_read_with_its_aliases() -> None:
    machines = parse_machine_help(HELP)
    assert "pc-q35-rhel9.2.0" in machines.names and "none" in machines.names
    assert machines.resolve("pc") == "pc-i440fx-7.2"
    assert machines.resolve("q35") == "pc-q35-rhel9.2.0"
    assert machines.resolve("pc-q35-7.2") == "pc-q35-7.2"
    assert machines.resolve("pc-q35-9.9") is None


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    """A file standing for an emulator (the runner is faked; only its stat matters)."""
    path = tmp_path / "qemu-system-x86_64"
    path.write_text("#!/bin/false\n")
    return path


CHECKS = [
    ("pc", None),
    ("q35", None),
    ("pc-q35-rhel9.2.0", None),
    ("pc-q35-7.2", None),
    ("pc-q35-7.3", "'pc-q35-7.3' is not a machine type of {b}; did you mean 'pc-q35-7.2', "
                   "'pc-q35-rhel9.2.0'?"),
    ("pc-i440fx-rhel7.6.0", "'pc-i440fx-rhel7.6.0' is not a machine type of {b}; did you mean "
                            "'pc-i440fx-7.2', 'pc-i440fx-7.1', 'pc-q35-rhel9.2.0'?"),
]


@pytest.mark.parametrize(("machine", "message"), CHECKS)
def test_parse_with_the_check_reports_at_the_type_line(binary: Path, tmp_path: Path,
                                                       machine: str, message: str | None) -> None:
    catalog = MachineCatalog(cache=tmp_path / "cache.json", run=lambda _: HELP)
    data = domain_xml(f"<devices><emulator>{binary}</emulator></devices>",
                      os=f"<os><type arch='x86_64' machine='{machine}'>hvm</type></os>")
    if message is None:
        assert model.parse(data, "f.xml", HostFacts(check_machine=catalog.check)).domain.os.machine == machine
        return
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(data, "f.xml", HostFacts(check_machine=catalog.check))
    assert [(i.line, i.message) for i in info.value.issues] == [
        (5, "<type machine>: " + message.format(b=binary))]


def test_the_list_is_asked_once_per_binary_version(binary: Path, tmp_path: Path) -> None:
    """Memory, then the JSON cache (another process), then the binary again after it changed."""
    runs: list[str] = []

    def run(path: str) -> str:
        runs.append(path)
        return HELP

    cache = tmp_path / "cache.json"
    first = MachineCatalog(cache=cache, run=run)
    assert first.check(str(binary), "pc") is None
    assert first.check(str(binary), "q35") is None
    assert runs == [str(binary)]
    assert str(binary) in json.loads(cache.read_text())
    assert MachineCatalog(cache=cache, run=run).check(str(binary), "pc") is None
    assert len(runs) == 1
    binary.write_text("#!/bin/false\n# upgraded\n")
    assert first.check(str(binary), "pc") is None
    assert len(runs) == 2


@pytest.mark.parametrize("emulator", ["/nonexistent/qemu-system-x86_64", "no-such-qemu"])
def test_an_emulator_that_cannot_be_asked_is_not_checked(tmp_path: Path, emulator: str) -> None:
    catalog = MachineCatalog(cache=tmp_path / "c.json", run=lambda _: HELP)
    assert catalog.check(emulator, "pc-q35-99.0") is None


def test_a_failing_binary_is_not_checked(binary: Path, tmp_path: Path) -> None:
    def run(path: str) -> str:
        raise OSError(8, "Exec format error")
    assert MachineCatalog(cache=tmp_path / "c.json", run=run).check(str(binary), "x") is None


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs Debian's QEMU")
def test_real_qemu_list(tmp_path: Path) -> None:
    """Debian 12's QEMU 7.2: its aliases resolve as it says; a typo gets the closest names."""
    catalog = MachineCatalog(cache=tmp_path / "c.json")
    machines = catalog.machines("qemu-system-x86_64")
    assert machines is not None
    assert (machines.resolve("pc") or "").startswith("pc-i440fx-")
    assert (machines.resolve("q35") or "").startswith("pc-q35-")
    message = catalog.check("qemu-system-x86_64", "pc-q53-7.2")
    assert message is not None and "'pc-q35-7.2'" in message
    assert os.stat(tmp_path / "c.json").st_size > 0


@pytest.mark.parametrize("program", ["true", "false", "yes", "cat"])
def test_a_program_that_is_not_qemu_is_refused(tmp_path: Path, program: str) -> None:
    """Reviewed: /bin/true or /usr/bin/yes as <emulator> passed unchecked; yes never ends."""
    found = shutil.which(program)
    assert found is not None
    catalog = MachineCatalog(cache=tmp_path / "c.json")
    message = catalog.check(found, "pc")
    assert message is not None and "lists no machine types" in message
    assert not (tmp_path / "c.json").exists()  # never cached: a later build may answer


def test_endless_output_is_cut_off(tmp_path: Path) -> None:
    chatty = tmp_path / "chatty"
    chatty.write_text("#!/bin/sh\nwhile :; do echo 'pc-i440fx-7.2 Standard PC'; done\n")
    chatty.chmod(0o755)
    assert len(run_machine_help(str(chatty))) == MAX_HELP_BYTES


def test_an_emulator_that_does_not_answer_in_time_is_not_checked_nor_asked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewed: a slow `-machine help` (a wrapper, a hung mount) held the whole daemon up;
    its child holding the pipe is killed with it, and the next scan does not ask again."""
    slow = tmp_path / "slowqemu"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setattr("reconciler.machines.RUN_TIMEOUT_S", 0.3)
    asked: list[str] = []

    def run(binary: str) -> str:
        asked.append(binary)
        return run_machine_help(binary)

    catalog = MachineCatalog(cache=tmp_path / "c.json", run=run)
    assert catalog.check(str(slow), "pc") is None  # unchecked, not refused
    assert catalog.check(str(slow), "pc") is None
    assert asked == [str(slow)]
    with pytest.raises(subprocess.TimeoutExpired):
        run_machine_help(str(slow))


def test_a_grandchild_holding_the_pipe_cannot_hold_the_probe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-review: `setsid sleep 25` (its own session, so not killed with the program) kept the
    pipe open and the probe waited 25 s for its end."""
    escapee = tmp_path / "escapee"
    escapee.write_text("#!/bin/sh\nsetsid sleep 30 &\nexec sleep 30\n")
    escapee.chmod(0o755)
    monkeypatch.setattr("reconciler.machines.RUN_TIMEOUT_S", 0.3)
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_machine_help(str(escapee))
    assert time.monotonic() - began < 10  # bounded by the timeout, not by the sleep's 30 s
