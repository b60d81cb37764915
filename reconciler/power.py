"""Power verbs: ``stop --force``, ``restart``, ``reboot``, ``reset``, carried out by the VM's worker.

Each verb is a one-shot request about one VM, carried out by whoever owns the VMs: the daemon
(asked over its control socket, see `reconciler.control`) or, when none runs, this process
(`carry_out_here`, which runs passes itself until the verb is done). None of them changes the
desired state in the domain file: ``stop --force`` is ``stop`` (the CLI writes the file first)
without waiting for the guest; ``restart`` stops the VM and lets the next pass start it from its
current definition (so it also applies a pending restart); ``reboot`` presses the ACPI power
button and starts the VM afresh once the guest has powered off (libvirt's "fake reboot");
``reset`` is a hard reset of the same QEMU.

Every step is announced through ``say`` (the CLI prints it as progress). Failures raise
`PowerError`, whose message says what to do.
"""

from __future__ import annotations

import asyncio
import os
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

from reconciler.errors import ReconcilerError
from reconciler.lock import DAEMON_LOCK, DirLock

if TYPE_CHECKING:
    from reconciler.loop import Reconciler
    from reconciler.paths import Layout
    from reconciler.supervisor import Vm

Verb = Literal["stop-force", "restart", "reboot", "reset"]
VERBS: tuple[Verb, ...] = get_args(Verb)

#: How long a restart or reboot may take to bring the VM back (QEMU start + first pass).
START_WAIT = 60.0
#: How long a forced stop may take (QMP quit, then SIGTERM, then SIGKILL, each bounded).
STOP_WAIT = 30.0


class PowerError(ReconcilerError):
    """A power verb could not be carried out; the message says why and what to do."""

    def __init__(self, name: str, verb: str, problem: str) -> None:
        self.name = name
        self.verb = verb
        self.problem = problem
        super().__init__(f"{name}: {verb.replace('-', ' --')}: {problem}")


def find_vm(rec: Reconciler, name: str, verb: str = "find") -> tuple[uuidlib.UUID, Vm | None]:
    """The uuid of the domain called `name` and its live VM (None if none runs).

    The desired set's domain of that name comes first (a VM being renamed is found by its new
    name with the QEMU it still runs under the old one), else a live VM running under that name.
    Raises `PowerError` when no domain has that name.
    """
    sup = rec.supervisor
    for uuid, want in sup.desired.wants.items():
        if want.name == name:
            return uuid, sup.vms.get(uuid)
    for uuid, vm in sup.vms.items():
        if vm.name == name:
            return uuid, vm
    for conflict in sup.desired.conflicts:
        if conflict.name == name:
            raise PowerError(name, verb, f"its file lost a clash: {conflict.message()}")
    raise PowerError(name, verb, f"no domain named {name!r} in {rec.layout.config_dir}")


def _live(vm: Vm | None, name: str, verb: str, blocked: str | None = None) -> Vm:
    """`vm` if it runs (running or paused, not starting or stopping), else `PowerError`."""
    if vm is None or vm.handle is None or vm.phase != "running":
        state = "not running" if vm is None else vm.phase
        if blocked is not None:
            raise PowerError(name, verb, f"the VM is {state}: it may not start now: {blocked}")
        raise PowerError(name, verb, f"the VM is {state}; `reconcile start {name}` starts it")
    return vm


ROOM_TO_START = 1 << 20
"""Bytes a fresh QEMU needs free in the runtime and log folders (pidfile, sockets, log lines)."""
INODES_TO_START = 64
"""Files (inodes) the same needs: its runtime folder's pidfile, sockets, definition copy."""


def room_to_start(layout: Layout) -> str | None:
    """Why a VM stopped now could not start again for want of disk space, or None.

    Asked before `restart` and `reboot` take a running VM down: on a full disk QEMU cannot
    write its pidfile, and the guest would stay down until space is freed. Two statvfs calls
    on the local runtime and log folders: cheap enough for the loop.
    """
    for folder in (layout.run_dir, layout.log_dir):
        try:
            st = os.statvfs(folder)
        except OSError:
            continue
        free = st.f_bavail * st.f_frsize
        if free < ROOM_TO_START:
            return (f"only {free // 1024} KiB are free in {folder}, too little to start QEMU "
                    "again after stopping it")
        if st.f_files and st.f_favail < INODES_TO_START:  # out of inodes: no new file either
            return (f"only {st.f_favail} inodes are free in {folder}, too few to start QEMU "
                    "again after stopping it")
    return None


async def carry_out(rec: Reconciler, verb: Verb, name: str, say: Callable[[str], None], *,
                    uuid: uuidlib.UUID | None = None) -> str:
    """Carry out `verb` on the VM `name` in the running reconciler `rec`; return the outcome line.

    With `uuid` the VM is that one, whatever now holds the name (`stop --force` after the CLI
    edited that VM's file: a stop the daemon already made must not turn the request onto a clash
    loser that takes the name next). Runs on `rec`'s loop, beside its passes (which must keep
    running: restart and reboot end with a start by the next pass). Raises `PowerError`.
    """
    sup = rec.supervisor
    if uuid is not None:
        vm = sup.vms.get(uuid)
    else:
        uuid, vm = find_vm(rec, name, verb)
    if verb == "reset":
        want = sup.desired.wants.get(uuid)
        live = _live(vm, name, verb, want.blocked if want is not None else None)
        await sup.submit(uuid, lambda: sup.execute(uuid, "system_reset"))
        return f"{name}: reset (pid {live.pid})"
    if verb == "stop-force":
        if vm is None:
            return f"{name}: not running"
        want = sup.desired.wants.get(uuid)
        if want is not None and want.running and want.kept is not None:
            raise PowerError(name, verb, "its file is invalid, so the VM keeps running on its "
                             "last valid definition, which wants it running; fix the file "
                             "(with state='stopped' to stop it), or delete the file to stop it")
        say(f"{name}: stopping at once (no ACPI wait)")
        sup.force_stop(uuid)
        rec.wake.set()
        try:
            if not await sup.until(lambda: uuid not in sup.vms, STOP_WAIT):
                want = sup.desired.wants.get(uuid)
                why = ("its desired state is still running (was its file edited back, or is it "
                       "invalid? an invalid file keeps the VM on its last valid definition: "
                       "fix the file, or delete it to stop the VM)"
                       if want is not None and want.running else "QEMU is still running")
                raise PowerError(name, verb, f"{why}; see its log "
                                 f"({rec.layout.vm(name, str(uuid)).log_file})")
        finally:
            sup.forced.discard(uuid)  # never a hard stop later that nobody asked for
        return f"{name}: stopped"
    want = sup.desired.wants.get(uuid)
    if want is None or not want.running:
        raise PowerError(name, verb, f"its desired state is stopped; `reconcile start {name}` "
                         "starts it")
    if uuid in sup.restarting:
        raise PowerError(name, verb, "a restart or reboot of it is already under way; wait for "
                         "it (`reconcile status`)")
    if want.blocked is not None and (vm is None or vm.handle is None):
        raise PowerError(name, verb, f"it may not start now: {want.blocked}")
    short = room_to_start(rec.layout)  # one statvfs of local folders: no await before the claim
    if short is not None and vm is not None:  # a full disk: QEMU could not start again
        raise PowerError(name, verb, f"{short}; it keeps running (free some space and run it "
                         "again)")
    old_pid = vm.pid if vm is not None else None
    sup.restarting.add(uuid)  # its file's place and disks stay its own while it comes back
    try:
        return await _restart(rec, verb, name, uuid, vm=vm, old_pid=old_pid, say=say)
    finally:
        sup.restarting.discard(uuid)


async def _restart(rec: Reconciler, verb: Verb, name: str, uuid: uuidlib.UUID, *,
                   vm: Vm | None, old_pid: int | None, say: Callable[[str], None]) -> str:
    """`restart` or `reboot` of a VM whose desired state is running (see `carry_out`)."""
    sup = rec.supervisor
    want = sup.desired.wants[uuid]
    if verb == "reboot":
        live = _live(vm, name, verb)
        if not (live.domain or want.domain).features.acpi:
            raise PowerError(name, verb, "the domain has no <acpi/> in <features>, so the guest "
                             f"never sees a power button; `reconcile restart {name}` restarts it")
        timeout = (live.domain or want.domain).desired.shutdown_timeout
        # pending while this command waits; called off when it gives up, so a power-off the
        # guest makes hours later is its own again, not turned into a start
        sup.mark_restart(uuid)
        try:
            await sup.submit(uuid, lambda: sup.execute(uuid, "system_powerdown"))
        except BaseException:
            sup.rebooting.discard(uuid)
            raise
        say(f"{name}: ACPI power button pressed; waiting up to {timeout:g}s for the guest "
            "to power off")
        # (one that powered off just as the wait ended is started again all the same)
        if not await sup.until(lambda: live.exited, timeout) and not live.exited:
            sup.unmark_restart(uuid)
            rec.wake.set()  # a pass writes the status without "reboot pending" at once
            raise PowerError(name, verb, f"the guest did not power off within {timeout:g}s "
                             "(does it handle ACPI?); the reboot is called off, it keeps "
                             f"running; `reconcile restart {name}` restarts it at once")
        say(f"{name}: powered off; starting it again")
    elif vm is not None and vm.handle is not None:
        sup.mark_restart(uuid)  # a daemon restarted during the stop still starts it again
        say(f"{name}: stopping")
        await sup.submit(uuid, lambda: sup.stop_now(uuid, "restart requested"))
        say(f"{name}: stopped; starting it again")
    else:
        say(f"{name}: not running; starting it now")
    rec.history.allow_start(uuid)  # a restart now: no back-off, no hold
    rec.wake.set()
    if not await sup.until(lambda: _running_anew(rec, uuid, old_pid)
                           or _blocked(rec, uuid) is not None,
                           START_WAIT):
        failure = rec.history.failures.get(uuid) or (
            ended.message if (ended := rec.history.ended.get(uuid)) else "")
        raise PowerError(name, verb, f"it did not start again within {START_WAIT:g}s"
                         + (f": {failure}" if failure else ""))
    blocked = _blocked(rec, uuid)
    if blocked is not None and not _running_anew(rec, uuid, old_pid):
        raise PowerError(name, verb, f"it may not start now: {blocked}")
    vm = sup.vms.get(uuid)
    if vm is None or vm.handle is None:  # its start failed: say how
        failure = rec.history.failures.get(uuid) or (
            ended.message if (ended := rec.history.ended.get(uuid)) else "")
        raise PowerError(name, verb, "it did not start again" + (f": {failure}" if failure
                                                                 else "; see its log"))
    return f"{name}: running, pid {vm.pid}"


def _blocked(rec: Reconciler, uuid: uuidlib.UUID) -> str | None:
    """Why `uuid` may not start now (a disk conflict it loses, or its file gone), else None."""
    want = rec.supervisor.desired.wants.get(uuid)
    if want is None:
        return "its domain file is gone or no longer defines it"
    return want.blocked


def _running_anew(rec: Reconciler, uuid: uuidlib.UUID, old_pid: int | None) -> bool:
    """Whether `uuid` runs a QEMU other than `old_pid` (or a start of it has failed)."""
    vm = rec.supervisor.vms.get(uuid)
    if vm is not None:
        return vm.phase == "running" and vm.handle is not None and vm.pid != old_pid
    ended = rec.history.ended.get(uuid)
    return ended is not None and ended.message.startswith("failed to start")


async def carry_out_here(rec: Reconciler, verb: Verb, name: str,
                         say: Callable[[str], None], lock_timeout: float = 120.0, *,
                         uuid: uuidlib.UUID | None = None) -> str:
    """No daemon runs: own the VMs for the time of `verb`, running passes, then let them go.

    Takes the pass lock (like ``reconcile --once``), adopts every VM, carries the verb out
    while running a pass on every wake-up, and detaches from every VM at the end (they keep
    running). Raises `PowerError` (or the lock's errors).
    """
    rec.prepare()
    if rec.lock.held_elsewhere():
        say(f"another reconcile is busy on {rec.layout.config_dir} (a pass, or a verb under "
            f"way); waiting up to {lock_timeout:g}s for it (--lock-timeout)")
    await rec.lock.acquire(lock_timeout)
    try:
        if DirLock(rec.layout.run_dir / DAEMON_LOCK).held_elsewhere():
            raise PowerError(name, verb, "a daemon started meanwhile; run the command again "
                             "(the daemon carries it out)")
        await rec.run_pass()  # adopts every VM; a stop it decides may be under way (--force)
        task = asyncio.ensure_future(carry_out(rec, verb, name, say, uuid=uuid))
        while not task.done():
            waker = asyncio.ensure_future(rec.wake.wait())
            await asyncio.wait({task, waker}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            if rec.wake.is_set() and not task.done():
                rec.wake.clear()
                await rec.run_pass()
        outcome = task.result()
        for _ in range(10):  # like --once: what the last pass started is let finish
            await rec.settle()
            await rec.run_pass()  # the status files say what happened
            if not rec.supervisor.working:
                break
        return outcome
    finally:
        await rec.detach_all()
        rec.lock.release()
