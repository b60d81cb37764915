"""`<locked/>` memory: refused before QEMU starts when the locked-memory limit is too low."""

from __future__ import annotations

import resource

import model
from reconciler import memlock
from tests.support.snippets import domain_xml

LOCKED = model.parse(domain_xml("<memoryBacking><locked/></memoryBacking>")).domain
"""64 MiB of guest memory, locked."""


def test_root_may_always_lock() -> None:
    assert memlock.problem(LOCKED, euid=lambda: 0, limit=lambda: 0) is None


def test_unlocked_memory_needs_no_limit() -> None:
    plain = model.parse(domain_xml()).domain
    assert memlock.problem(plain, euid=lambda: 1000, limit=lambda: 0) is None


def test_a_user_needs_a_limit_above_the_guests_memory() -> None:
    assert memlock.problem(LOCKED, euid=lambda: 1000, limit=lambda: 1 << 40) is None
    assert memlock.problem(LOCKED, euid=lambda: 1000,
                           limit=lambda: resource.RLIM_INFINITY) is None
    why = memlock.problem(LOCKED, euid=lambda: 1000, limit=lambda: 8 << 20)
    assert why == ("<memoryBacking><locked/> needs a locked-memory limit of at least 320 MiB "
                   "for QEMU, but this reconciler's is 8 MiB; raise it (LimitMEMLOCK= in the "
                   "systemd unit, or ulimit -l) or remove <locked/>")
