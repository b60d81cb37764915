"""The soak's checks can fail, and a short soak holds the promise (the long one: `just soak`)."""

from __future__ import annotations

import os

import pytest

from tests.faults.soak import Config, Entry, Soak, Spec, parse, report
from tests.faults.support import Qemu, doubled
from tests.integration.test_loop import light_uuid

pytestmark = [pytest.mark.qemu]


def test_doubled_finds_two_qemus_of_one_uuid_or_image() -> None:
    """One sample with two live QEMUs of one uuid, or of one writable image, is reported."""
    assert doubled([Qemu(1, "u1", ("/i1",)), Qemu(2, "u2", ("/i2",))]) == []
    assert doubled([Qemu(1, "u1", ()), Qemu(2, "u1", ())]) == ["uuid u1: pids [1, 2]"]
    assert doubled([Qemu(1, "u1", ("/i",)), Qemu(2, "u2", ("/i",))]) == ["image /i: pids [1, 2]"]


def test_parse_reads_back_only_what_the_soak_wrote() -> None:
    """A spec round-trips through its text; a damaged text is invalid."""
    spec = Spec("s01", light_uuid("s01"), "stopped", None, "v7")
    assert parse(spec.text()) == spec
    assert parse(spec.text().replace("</memory>", "</memroy>")) is None


def test_the_soak_checks_see_a_lost_and_a_leaked_vm() -> None:
    """A domain the model wants running but the daemon never saw is reported lost; one the
    model says nothing may run for, running, is reported leaked."""
    soak = Soak(Config(vms=2, ops=0, seconds=0))
    try:
        soak.setup()
        soak.check()
        assert not soak.figures.failed, report(soak.config, soak.figures)
        ghost = Spec("s03", light_uuid("s03"))
        soak.files["never-written.xml"] = Entry(ghost.text(), ghost, ghost)
        must, _ = soak.expectations()
        leaked_uuid = next(iter(must.keys() - {ghost.uuid}))
        wrong = soak.converged(must, {leaked_uuid})
        assert any(line.startswith("lost: s03") for line in wrong), wrong
        assert any(line.startswith("leaked: QEMU") and leaked_uuid in line for line in wrong), wrong
    finally:
        soak.world.close()


def test_short_soak() -> None:
    """A short soak (4 VMs, ~100 operations): nothing lost, doubled or leaked."""
    config = Config(vms=4, ops=int(os.environ.get("QEMUD_FAULT_SOAK_OPS", "100")), seconds=20,
                    seed=int(os.environ.get("QEMUD_SOAK_SEED", "9")), check_every=50)
    figures = Soak(config).run()
    text = report(config, figures)
    assert sum(figures.ops.values()) >= 20 and figures.checks >= 2, text
    assert not figures.failed, text
