"""`<memoryBacking><locked/>`: whether QEMU may lock the guest's memory, asked before it starts.

QEMU started with `-overcommit mem-lock=on` locks all its memory (mlockall) and exits with a
bare "locking memory failed" when it may not. Root (CAP_IPC_LOCK) always may; anyone else needs
an RLIMIT_MEMLOCK above the guest's memory, which QEMU inherits from the reconciler.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

import model
from model.memory import initial_memory

OVERHEAD = 256 << 20
"""Room for QEMU's own memory beside the guest's (a conservative allowance)."""


def problem(domain: model.Domain, euid: Callable[[], int] = os.geteuid,
            limit: Callable[[], int] = lambda: resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
            ) -> str | None:
    """None when QEMU may lock `domain`'s memory (or it does not ask to), else what to do."""
    backing = domain.memory_backing
    if backing is None or not backing.locked or euid() == 0:
        return None
    soft = limit()
    need = initial_memory(domain) + sum(m.size for m in domain.devices.memories) + OVERHEAD
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    return (f"<memoryBacking><locked/> needs a locked-memory limit of at least {need >> 20} MiB "
            f"for QEMU, but this reconciler's is {soft >> 20} MiB; raise it (LimitMEMLOCK= in "
            "the systemd unit, or ulimit -l) or remove <locked/>")
