"""The soak (issue 9): the real daemon, real QEMU, ~30 VMs and thousands of random file operations.

`python -m tests.faults.soak` (what `just soak` runs after the model check) drives one daemon on a
short /tmp directory with a seeded stream of operations: create, edit, rename and delete domain
files, name/uuid/disk clashes, invalid edits and their fixes, identity changes, `reconcile start`
and `stop`, SIGHUP, daemon restarts (SIGTERM or SIGKILL) and killed QEMUs. A thread samples /proc
all along; every `check_every` operations the run waits (bounded, on status files and /proc, never
a fixed sleep) until the daemon has converged, then checks the promise:

- never two live QEMUs for one uuid or one writable image (at every /proc sample);
- every domain whose file alone claims its name, uuid and image, valid and wanted running, runs
  with exactly one QEMU (a lost VM otherwise), unless its status says it waits for a VM that runs
  an older definition of its own file (`running*`, pending restart) holding one of those claims,
  as the README promises (counted apart); nothing runs for a uuid no file claims, and no
  process but the daemon and its QEMUs mentions the directory (a leaked process otherwise);
- the daemon's descriptors other than its QEMUs' pidfds and sockets stay as many as after its
  first check, and no QEMU holds a descriptor of the daemon (inotify, lock, control socket);
- the daemon's RSS stays flat (its last incarnation, which runs the last third of the operations).

Figures are printed at the end: operations done, faults injected, VMs lost, doubled, processes
leaked, descriptors leaked, RSS start and end. The exit status is 1 when a figure that must be 0
is not. Tunables (environment): QEMUD_SOAK_VMS (30), QEMUD_SOAK_OPS (3000), QEMUD_SOAK_SECONDS
(300: the operations stop there, done or not), QEMUD_SOAK_SEED (9), QEMUD_SOAK_CHECK_EVERY (250);
QEMUD_SOAK_STOP=1 ends the run at the first failed check, after printing what explains it.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.faults.support import ProcWatch, qemus_under, rss_kib
from tests.integration.test_loop import Daemon, World, light_uuid, light_xml
from tests.support.procs import alive, pids_mentioning, proc_state

CONVERGE = 60.0
"""Upper bound for the daemon to converge before a check (back-offs after killed QEMUs included)."""


@dataclass(frozen=True)
class Config:
    """How big and long a soak is."""

    vms: int = 30
    ops: int = 3000
    seconds: float = 300.0
    seed: int = 9
    check_every: int = 250

    @classmethod
    def from_env(cls) -> Config:
        """The defaults, overridden by QEMUD_SOAK_* variables."""
        env = os.environ.get
        return cls(int(env("QEMUD_SOAK_VMS", "30")), int(env("QEMUD_SOAK_OPS", "3000")),
                   float(env("QEMUD_SOAK_SECONDS", "300")), int(env("QEMUD_SOAK_SEED", "9")),
                   int(env("QEMUD_SOAK_CHECK_EVERY", "250")))


@dataclass(frozen=True)
class Spec:
    """What a valid domain file of the soak says."""

    name: str
    uuid: str
    state: str = "running"
    disk: Path | None = None
    description: str = "v1"

    def text(self) -> str:
        """The file's text."""
        return light_xml(self.name, uuid=self.uuid, state=self.state, disk=self.disk,
                     description=self.description)

    def claims(self) -> set[str]:
        """The name, uuid and writable image it claims."""
        out = {f"name:{self.name}", f"uuid:{self.uuid}"}
        if self.disk is not None:
            out.add(f"disk:{self.disk}")
        return out


_SPEC = re.compile(r"<name>(?P<name>[^<]*)</name>\s*<uuid>(?P<uuid>[^<]*)</uuid>.*?"
                   r"<description>(?P<description>[^<]*)</description>.*?(?:<source file='"
                   r"(?P<disk>[^']*)'/>.*?)?state='(?P<state>\w+)'", re.DOTALL)


def parse(text: str) -> Spec | None:
    """The spec of a file the soak wrote (or `reconcile start/stop` edited), None if invalid."""
    found = _SPEC.search(text)
    if found is None:
        return None
    disk = Path(found["disk"]) if found["disk"] else None
    spec = Spec(found["name"], found["uuid"], found["state"], disk, found["description"])
    return spec if spec.text() == text else None


@dataclass
class Entry:
    """One domain file as the soak knows it: what it says now, what it last said validly."""

    text: str
    spec: Spec | None
    last_valid: Spec | None


@dataclass
class Figures:
    """What the soak counts."""

    ops: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    checks: int = 0
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    fds: list[str] = field(default_factory=list)
    rss: list[tuple[int, int]] = field(default_factory=list)
    """(daemon incarnation, RSS KiB) at each check."""
    samples: int = 0
    seconds: float = 0.0
    waited: int = 0
    """Domains that waited for a VM running an older definition (pending restart) at a check."""

    @property
    def failed(self) -> bool:
        """Whether a figure that must be 0 is not."""
        return bool(self.lost or self.doubled or self.leaked or self.fds)


FAULTS = {"invalid", "clash-name", "clash-uuid", "clash-disk", "sighup", "restart", "kill-daemon",
          "kill-qemu", "garbage"}


class Soak:
    """One soak run on a fresh `World`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.world = World()
        self.files: dict[str, Entry] = {}
        self.figures = Figures()
        self.slots = [f"s{i:02d}" for i in range(config.vms + config.vms // 4 + 2)]
        self.images = [self.world.root / f"img{i}.raw" for i in range(max(2, config.vms // 6))]
        for image in self.images:
            with image.open("wb") as out:
                out.truncate(1 << 20)
        self.incarnation = 0
        self.fd_base: int | None = None
        self._serial = 0
        self.excused: set[str] = set()
        """Domains found waiting for a VM running an older definition (not lost: README)."""
        self.journal: list[str] = []
        """One line per file operation (for explaining a failed check)."""

    # ------------------------------------------------------------------ the daemon

    @property
    def daemon(self) -> Daemon:
        """The daemon serving now."""
        return self.world.daemons[-1]

    def start_daemon(self) -> None:
        """Start a daemon (the previous one is gone); its descriptors are measured anew."""
        self.world.start_daemon()
        self.incarnation += 1
        self.fd_base = None

    # ------------------------------------------------------------------ files

    def _fname(self, hint: str) -> str:
        """A fresh file name."""
        self._serial += 1
        return f"{hint}-{self._serial}.xml"

    def put(self, fname: str, text: str) -> None:
        """Write a domain file (atomically, or in place as some editors do) and model it."""
        path = self.world.config / fname
        tmp_used = self.rng.random() < 0.7
        in_place = "" if tmp_used or not path.exists() else " in place"
        if tmp_used:
            tmp = self.world.config / f".{fname}.tmp"
            tmp.write_text(text)
            tmp.replace(path)
        else:
            path.write_text(text)
        spec = parse(text)
        self.journal.append(f"op {sum(self.figures.ops.values())}: put {fname}: {spec or 'invalid'}"
                            f"{in_place}")
        old = self.files.get(fname)
        last = spec or (old.spec or old.last_valid if old else None)
        self.files[fname] = Entry(text, spec, last)

    def claimed(self, skip: str | None = None) -> Counter[str]:
        """How many files claim each name, uuid and image (now, or by their last valid text)."""
        count: Counter[str] = Counter()
        for fname, entry in self.files.items():
            if fname == skip:
                continue
            claims: set[str] = set()
            for spec in (entry.spec, entry.last_valid):
                if spec is not None:
                    claims |= spec.claims()
            count.update(claims)
        return count

    def free_slot(self) -> str | None:
        """A slot name no file claims, if any."""
        used = self.claimed()
        free = [s for s in self.slots if f"name:{s}" not in used and
                f"uuid:{light_uuid(s)}" not in used]
        return self.rng.choice(free) if free else None

    def valid(self) -> list[str]:
        """Files that are valid now."""
        return [f for f, e in self.files.items() if e.spec is not None]

    def troubled(self) -> list[str]:
        """Files that are invalid or clash with another (what a fix or delete resolves)."""
        counts = self.claimed()
        out = []
        for fname, entry in self.files.items():
            specs = [s for s in (entry.spec, entry.last_valid) if s is not None]
            if entry.spec is None or any(counts[c] > 1 for s in specs for c in s.claims()):
                out.append(fname)
        return out

    # ------------------------------------------------------------------ operations

    def op(self) -> bool:
        """One random operation; False when the one drawn had nothing to act on."""
        running = sum(1 for e in self.files.values() if e.spec and e.spec.state == "running")
        troubled = self.troubled()
        choices = {
            "create": 6 if running < self.config.vms else 0, "edit": 14, "rename": 8,
            "delete": 4 + 2 * len(troubled), "clash-name": 3, "clash-uuid": 3, "clash-disk": 3,
            "invalid": 6, "fix": 6 * len(troubled), "identity": 3, "toggle": 8, "cli": 1.5,
            "sighup": 2, "restart": 0.5 if self.restarts_allowed() else 0,
            "kill-daemon": 0.4 if self.restarts_allowed() else 0, "kill-qemu": 1, "garbage": 2,
        }
        names = [k for k, w in choices.items() if w]
        kind = self.rng.choices(names, [choices[k] for k in names])[0]
        if getattr(self, f"_op_{kind.replace('-', '_')}")(troubled) is False:
            return False  # nothing to do it on right now
        self.figures.ops[kind] += 1
        if kind in FAULTS:
            self.figures.faults[kind] += 1
        return True

    def restarts_allowed(self) -> bool:
        """Daemon restarts happen in the first two thirds; the last third measures its RSS."""
        return sum(self.figures.ops.values()) < self.config.ops * 2 // 3

    def _op_create(self, _: list[str]) -> bool:
        slot = self.free_slot()
        if slot is None:
            return False
        disk = self.rng.choice(self.images) if self.rng.random() < 0.3 else None
        if disk is not None and f"disk:{disk}" in self.claimed():
            disk = None
        state = "running" if self.rng.random() < 0.85 else "stopped"
        self.put(self._fname(slot), Spec(slot, light_uuid(slot), state, disk).text())
        return True

    def _rewrite_valid(self, change: Callable[[Spec], Spec]) -> bool:
        """Rewrite one randomly chosen valid file with `change` applied to its spec; False if none."""
        valid = self.valid()
        if not valid:
            return False
        fname = self.rng.choice(valid)
        spec = self.files[fname].spec
        assert spec is not None
        self.put(fname, change(spec).text())
        return True

    def _op_edit(self, _: list[str]) -> bool:
        return self._rewrite_valid(
            lambda spec: replace(spec, description=f"v{self.rng.randrange(1000)}"))

    def _op_toggle(self, _: list[str]) -> bool:
        return self._rewrite_valid(
            lambda spec: replace(spec, state="stopped" if spec.state == "running" else "running"))

    def _op_rename(self, _: list[str]) -> bool:
        if not self.files:
            return False
        fname = self.rng.choice(sorted(self.files))
        new = self._fname(fname.split("-")[0])
        os.rename(self.world.config / fname, self.world.config / new)
        self.files[new] = self.files.pop(fname)
        self.journal.append(f"op {sum(self.figures.ops.values())}: rename {fname} -> {new}")
        return True

    def _op_delete(self, troubled: list[str]) -> bool:
        pool = troubled if troubled and self.rng.random() < 0.7 else sorted(self.files)
        if not pool:
            return False
        fname = self.rng.choice(pool)
        (self.world.config / fname).unlink()
        del self.files[fname]
        self.journal.append(f"op {sum(self.figures.ops.values())}: delete {fname}")
        return True

    def _clash(self, what: str) -> bool:
        valid = self.valid()
        if not valid:
            return False
        spec = self.files[self.rng.choice(valid)].spec
        assert spec is not None
        slot = self.free_slot()
        if slot is None:
            return False
        if what == "name":
            other = Spec(spec.name, light_uuid(slot), "running")
        elif what == "uuid":
            other = Spec(slot, spec.uuid, "running")
        else:
            other = Spec(slot, light_uuid(slot), "running", spec.disk or self.rng.choice(self.images))
        self.put(self._fname(f"clash{what}"), other.text())
        return True

    def _op_clash_name(self, _: list[str]) -> bool:
        return self._clash("name")

    def _op_clash_uuid(self, _: list[str]) -> bool:
        return self._clash("uuid")

    def _op_clash_disk(self, _: list[str]) -> bool:
        return self._clash("disk")

    def _op_invalid(self, _: list[str]) -> bool:
        valid = self.valid()
        if not valid:
            return False
        fname = self.rng.choice(valid)
        text = self.files[fname].text
        broken = self.rng.choice([
            text.replace("</memory>", "</memroy>"), text.replace("<vcpu", "<vcpux"),
            text.replace("MiB", "furlongs"), text[: len(text) // 2],
            text.replace("machine='pc'", "machine='nope'")])
        if broken == text:
            broken = text.replace("<domain", "<domian", 1)
        self.put(fname, broken)
        return True

    def _op_garbage(self, _: list[str]) -> bool:
        self.put(self._fname("garbage"), self.rng.choice(["", "<domain>", "\x00\x01", "<a/>"]))
        return True

    def _op_fix(self, troubled: list[str]) -> bool:
        if not troubled:
            return False
        fname = self.rng.choice(troubled)
        entry = self.files[fname]
        slot = self.free_slot()
        base = entry.spec or entry.last_valid
        if base is not None and not (self.claimed(skip=fname) & Counter(base.claims())):
            self.put(fname, base.text())
        elif slot is not None:
            self.put(fname, Spec(slot, light_uuid(slot), "running").text())
        else:
            (self.world.config / fname).unlink()
            del self.files[fname]
            self.journal.append(f"op {sum(self.figures.ops.values())}: delete {fname}")
        return True

    def _op_identity(self, _: list[str]) -> bool:
        valid = self.valid()
        slot = self.free_slot()
        if not valid or slot is None:
            return False
        fname = self.rng.choice(valid)
        spec = self.files[fname].spec
        assert spec is not None
        self.put(fname, replace(spec, name=slot, uuid=light_uuid(slot)).text())
        return True

    def _op_cli(self, _: list[str]) -> bool:
        valid = self.valid()
        if not valid:
            return False
        fname = self.rng.choice(valid)
        spec = self.files[fname].spec
        assert spec is not None
        verb = "stop" if spec.state == "running" else "start"
        self.world.cli(verb, spec.name, timeout=120)
        for name, entry in list(self.files.items()):  # whatever it edited, as it is now
            with contextlib.suppress(FileNotFoundError):
                text = (self.world.config / name).read_text()
                if text != entry.text:
                    self.files[name] = Entry(text, parse(text), parse(text) or entry.last_valid)
                    self.journal.append(f"op {sum(self.figures.ops.values())}: {verb} edited "
                                        f"{name}: {parse(text)}")
        return True

    def _op_sighup(self, _: list[str]) -> bool:
        os.kill(self.daemon.proc.pid, signal.SIGHUP)
        return True

    def _op_restart(self, _: list[str]) -> bool:
        self.daemon.proc.send_signal(signal.SIGTERM)
        code = self.daemon.proc.wait(timeout=30)
        if code != 0:
            self.figures.leaked.append(f"the daemon exited {code} on SIGTERM")
        self.start_daemon()
        return True

    def _op_kill_daemon(self, _: list[str]) -> bool:
        self.daemon.proc.kill()
        self.daemon.proc.wait(timeout=30)
        self.start_daemon()
        return True

    def _op_kill_qemu(self, _: list[str]) -> bool:
        qemus = qemus_under(self.world.layout.run_dir)
        if not qemus:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.rng.choice(qemus).pid, signal.SIGKILL)
        return True

    # ------------------------------------------------------------------ checks

    def expectations(self) -> tuple[dict[str, str], set[str]]:
        """uuid -> name of the domains that must run; uuids nothing may run for."""
        counts = self.claimed()
        must: dict[str, str] = {}
        claimed_uuids: set[str] = set()
        for entry in self.files.values():
            for spec in (entry.spec, entry.last_valid):
                if spec is not None:
                    claimed_uuids.add(spec.uuid)
            spec = entry.spec
            if spec is None or spec.state != "running":
                continue
            if all(counts[c] == 1 for c in spec.claims()):
                must[spec.uuid] = spec.name
        unclaimed = {light_uuid(s) for s in self.slots} - claimed_uuids
        stopped = set()
        for entry in self.files.values():
            spec = entry.spec
            if spec is not None and spec.state == "stopped" and all(
                    counts[c] == 1 for c in spec.claims()):
                stopped.add(spec.uuid)
        return must, unclaimed | stopped

    def converged(self, must: dict[str, str], none: set[str]) -> list[str]:
        """What is not as it must be right now (empty once converged)."""
        qemus = qemus_under(self.world.layout.run_dir)
        by_uuid: dict[str, list[int]] = {}
        for q in qemus:
            by_uuid.setdefault(q.uuid, []).append(q.pid)
        wrong = []
        for uuid, name in must.items():
            pids = by_uuid.get(uuid, [])
            st = self.status(name)
            if not pids and self.held_by_definition_in_use(st):
                self.excused.add(name)
                continue
            if len(pids) != 1 or st is None or (st.get("state"), st.get("pid")) != ("running",
                                                                                    pids[0]):
                wrong.append(f"lost: {name} ({uuid}) QEMUs {pids}, status "
                             f"{st and (st.get('state'), st.get('pid'), st.get('reason'))}")
        for uuid in none:
            if by_uuid.get(uuid):
                wrong.append(f"leaked: QEMU {by_uuid[uuid]} of {uuid}, which must not run")
        return wrong

    def held_by_definition_in_use(self, st: dict[str, object] | None) -> bool:
        """Whether a domain waits, rightly, for a VM that runs an older definition of its file.

        A running VM whose file changed keeps running on the definition in use (`running*`,
        pending restart), claims (such as a disk image) included, until `reconcile restart`:
        a domain needing one of those claims waits for it, and its status says so.
        """
        reason = str(st.get("reason") or "") if st else ""
        found = re.match(r"waiting for the QEMU of '([^']+)' to go", reason)
        holder = self.status(found[1]) if found else None
        return bool(holder and holder.get("state") == "running" and holder.get("pending_restart"))

    def explain(self, wrong: list[str]) -> None:
        """Print what the model and the daemon say about the domains named in `wrong`."""
        names = {n for line in wrong for n in re.findall(r"\b(s\d\d)\b", line)}
        print(f"soak: check {self.figures.checks} failed after op {sum(self.figures.ops.values())}:",
              *wrong, sep="\n  ", file=sys.stderr)
        for name in sorted(names):
            for fname, entry in sorted(self.files.items()):
                specs = (entry.spec, entry.last_valid)
                if any(s is not None and (s.name == name or s.uuid == light_uuid(name))
                       for s in specs):
                    print(f"  model {fname}: now {entry.spec}, last valid {entry.last_valid}",
                          file=sys.stderr)
            print(f"  status {name}: {self.status(name)}", file=sys.stderr)
            print("  daemon: " + "\n  daemon: ".join(self.daemon.lines(name)[-6:]),
                  file=sys.stderr)
        files = {f for line in self.journal for f in re.findall(r"[\w-]+\.xml", line)
                 if any(f"name='{n}'" in line or f"{n}-" in f for n in names)}
        for line in self.journal:
            if any(f in line for f in files):
                print(f"  journal: {line}", file=sys.stderr)
        if os.environ.get("QEMUD_SOAK_STOP"):
            raise SystemExit(f"soak: stopped at the failed check ({self.world.root})")

    def status(self, name: str) -> dict[str, object] | None:
        """A domain's status file, None when absent or being replaced."""
        try:
            return self.world.status(name)
        except Exception:
            return None

    def check(self) -> None:
        """Wait (bounded) for convergence, then count what is wrong."""
        self.figures.checks += 1
        must, none = self.expectations()
        deadline = time.monotonic() + CONVERGE
        wrong = self.converged(must, none)
        while wrong and time.monotonic() < deadline:
            time.sleep(0.1)
            wrong = self.converged(must, none)
        for line in wrong:
            (self.figures.lost if line.startswith("lost") else self.figures.leaked).append(
                f"check {self.figures.checks}: {line}")
        if wrong:
            self.explain(wrong)
        self.check_processes()
        self.check_fds()
        self.figures.rss.append((self.incarnation, rss_kib(self.daemon.proc.pid)))

    def check_processes(self) -> None:
        """No process but the daemon and its QEMUs mentions the directory; no zombie children."""
        qemus = {q.pid for q in qemus_under(self.world.layout.run_dir)}
        daemon = self.daemon.proc.pid
        for pid in pids_mentioning(self.world.root):
            if pid not in qemus and pid != daemon and alive(pid):
                self.figures.leaked.append(f"check {self.figures.checks}: pid {pid} "
                                           f"{Path(f'/proc/{pid}/cmdline').read_bytes()[:200]!r}")
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{daemon}/task/{daemon}/children").read_text().split()
            for child in children:
                if proc_state(int(child)) == "Z":
                    self.figures.leaked.append(f"check {self.figures.checks}: zombie {child}")

    def check_fds(self) -> None:
        """The daemon's own descriptors stay as many; QEMUs hold none of the daemon's."""
        daemon = self.daemon.proc.pid
        own = 0
        for fd in os.listdir(f"/proc/{daemon}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{daemon}/fd/{fd}")
                if not (target.startswith("socket:") or "pidfd" in target):
                    own += 1
        if self.fd_base is None:
            self.fd_base = own
        elif own > self.fd_base + 4:
            self.figures.fds.append(f"check {self.figures.checks}: daemon holds {own} "
                                    f"descriptors of its own, {self.fd_base} at first")
        for q in qemus_under(self.world.layout.run_dir):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{q.pid}/fd"):
                    target = os.readlink(f"/proc/{q.pid}/fd/{fd}")
                    if "inotify" in target or target.endswith((".lock", "control.sock")):
                        self.figures.fds.append(f"QEMU {q.pid} holds {target}")

    # ------------------------------------------------------------------ the run

    def setup(self) -> None:
        """The daemon and `vms` running domains."""
        self.start_daemon()
        for slot in self.slots[: self.config.vms]:
            self.put(self._fname(slot), Spec(slot, light_uuid(slot)).text())

    def run(self) -> Figures:
        """Setup, operations with checks, a final check; the figures."""
        began = time.monotonic()
        try:
            self.setup()
            self.check()
            pace = self.config.seconds / max(1, self.config.ops) * 0.4
            with ProcWatch(self.world.layout.run_dir, interval=0.05) as watch:
                done = 0
                while done < self.config.ops and time.monotonic() - began < self.config.seconds:
                    if not self.op():
                        continue
                    done += 1
                    time.sleep(self.rng.uniform(0, 2 * pace))  # load pacing, not synchronisation
                    if done % self.config.check_every == 0:
                        self.check()
                self.check()
            self.figures.samples = watch.samples
            self.figures.doubled = [" / ".join(d) for d in watch.doubles]
        finally:
            self.figures.seconds = time.monotonic() - began
            self.figures.waited = len(self.excused)
            self.world.close()
        return self.figures


def report(config: Config, figures: Figures) -> str:
    """The figures, as `just soak` prints them."""
    ops = sum(figures.ops.values())
    faults = sum(figures.faults.values())
    last = [kib for inc, kib in figures.rss if inc == figures.rss[-1][0]] if figures.rss else [0]
    lines = [
        f"soak: {config.vms} VMs, seed {config.seed}, {ops} operations in {figures.seconds:.0f} s, "
        f"{figures.checks} checks, {figures.samples} /proc samples",
        "soak: operations: " + ", ".join(f"{k} {v}" for k, v in sorted(figures.ops.items())),
        f"soak: faults injected: {faults} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(figures.faults.items())) + ")",
        f"soak: VMs lost: {len(figures.lost)}, doubled: {len(figures.doubled)}, processes leaked: "
        f"{len(figures.leaked)}, descriptors leaked: {len(figures.fds)} ({figures.waited} domains "
        "rightly waited for a VM running an older definition of its file: pending restart)",
        f"soak: daemon RSS start {last[0] / 1024:.1f} MiB, end {last[-1] / 1024:.1f} MiB "
        f"(its last incarnation, {len(last)} checks; first daemon at its first check "
        f"{figures.rss[0][1] / 1024 if figures.rss else 0:.1f} MiB)",
    ]
    for what in (figures.lost, figures.doubled, figures.leaked, figures.fds):
        lines += [f"  {line}" for line in what[:10]]
    return "\n".join(lines)


def rss_flat(figures: Figures) -> bool:
    """The last incarnation's RSS grew by at most 20 % (+4 MiB of slack for a short run)."""
    last = [kib for inc, kib in figures.rss if inc == figures.rss[-1][0]] if figures.rss else []
    return len(last) < 2 or last[-1] <= last[0] * 1.2 + 4096


def main() -> int:
    """Run a soak with the environment's settings; print the figures; 1 if the promise broke."""
    config = Config.from_env()
    print(f"soak: starting: {config}", flush=True)
    figures = Soak(config).run()
    print(report(config, figures), flush=True)
    flat = rss_flat(figures)
    print(f"soak: RSS flat: {'yes' if flat else 'NO'}", flush=True)
    return 1 if figures.failed or not flat else 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["Config", "Figures", "Soak", "main", "report", "rss_flat"]
