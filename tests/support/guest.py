"""A tiny, real Linux test guest for QEMU integration tests.

`build_guest()` returns a `Guest`: Debian's cloud kernel (``vmlinuz`` of the
``linux-image-*-cloud-amd64`` package the ``linux-image-cloud-amd64`` metapackage
points to) and a gzip-compressed newc initramfs holding a static busybox, the
kernel modules needed to honour the ACPI power button (``evdev``, ``button``)
and to report panics through QEMU's pvpanic device (``pvpanic*``), and an
``/init`` script that prints `READY_LINE` on the console (ttyS0) once it is
fully set up.

Guest behaviour, steered by switches on the kernel command line (see
`Guest.cmdline`):

* default: an ACPI power button press (QMP ``system_powerdown``) makes the guest
  run ``poweroff -f``; QEMU then emits ``SHUTDOWN`` with ``guest=true``
  (reason ``guest-shutdown``) and exits with status 0.
* ``qemud.powerbutton=ignore``: the power button is never acted upon.
* ``qemud.poweroff_after=N``: the guest powers itself off N seconds after setup.
* ``qemud.reboot_after=N``: the guest runs ``reboot -f`` N seconds after setup
  (QEMU emits ``RESET`` with ``guest=true``, reason ``guest-reset`` -- often two
  or three of them per reboot, as the kernel tries several reset methods, so
  count ready lines rather than RESET events -- and, unless ``-no-reboot`` is
  given, boots the guest again, which reboots again N seconds later, and so on).
* ``qemud.panic_after=N``: the guest panics N seconds after setup
  (``echo c > /proc/sysrq-trigger``).  The command line then carries
  ``panic=0`` instead of ``panic=-1`` so that the panicked guest halts instead
  of rebooting, which leaves what happens next entirely to QEMU's
  ``-action panic=...`` (needs ``-device pvpanic``, the pvpanic-mmio module
  binds to its ACPI ``QEMU0001`` node; ``-device pvpanic-pci`` works too).

Everything is built once and cached under ``$QEMUD_TEST_CACHE`` or
``~/.cache/qemud/test-guest/`` (made private, mode 0700: a VM boots what it finds
there, so nobody else may change it), in a directory keyed by the kernel package
version and a hash of this recipe.  Builds are serialised between processes
with ``fcntl.flock`` and published by an atomic ``rename``, so concurrent
pytest processes are safe.  Once built, a guest is reused without asking apt
again (apt-cache takes ~0.6 s here); set ``QEMUD_TEST_GUEST_REFRESH=1`` to
re-resolve the metapackage and build a newer kernel if there is one.

``python -m tests.support.guest`` builds it from the command line and points
``<cache>/vmlinuz`` and ``<cache>/initramfs.cpio.gz`` at the current build: paths
that stay valid when a newer kernel is built. ``--samples SRC DEST`` also copies the
sample domains into DEST (a private directory, files already there kept), writing that
cache directory where ``samples/testguest.xml`` says `GUEST_DIR_PLACEHOLDER`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple, TypeVar

__all__ = [
    "READY_LINE",
    "Guest",
    "GuestBuildError",
    "build_guest",
    "cache_root",
    "install_samples",
    "link_guest",
    "main",
    "private_cache_root",
]

#: Exact line the guest's /init prints on the console once it is ready.
READY_LINE = "QEMUD-GUEST-READY"

#: What ``samples/testguest.xml`` says where the guest's directory goes (`install_samples`).
GUEST_DIR_PLACEHOLDER = "@TEST_GUEST_DIR@"
#: A directory earlier versions linked the guest into for every user: shared, so unsafe.
_OLD_SHARED_DIR = "/var/tmp/qemud/test-guest"

#: Debian metapackage whose dependency names the real kernel package.
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
#: Debian package providing a statically linked busybox at bin/busybox.
BUSYBOX_PACKAGE = "busybox-static"

#: Base kernel command line; `Guest.cmdline()` without switches returns exactly this.
BASE_CMDLINE = "console=ttyS0 panic=-1"

# (path suffix under lib/modules/<release>/kernel/, name in the initramfs, required)
# Load order matters: pvpanic-mmio and pvpanic-pci depend on pvpanic.
_MODULES: tuple[tuple[str, str, bool], ...] = (
    ("drivers/input/evdev.ko", "evdev", True),
    ("drivers/acpi/button.ko", "button", True),
    ("drivers/misc/pvpanic/pvpanic.ko", "pvpanic", False),
    ("drivers/misc/pvpanic/pvpanic-mmio.ko", "pvpanic-mmio", False),
    ("drivers/misc/pvpanic/pvpanic-pci.ko", "pvpanic-pci", False),
)

_INIT_SCRIPT = r"""#!/bin/busybox sh
# qemud test guest: PID 1.  Prints the ready line, then waits for the power
# button (or for the timers requested on the kernel command line).
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo /bin/true > /proc/sys/kernel/modprobe

log() { echo "qemud-guest: $*"; }

powerbutton=poweroff
poweroff_after=
panic_after=
reboot_after=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        qemud.powerbutton=*) powerbutton="${arg#*=}" ;;
        qemud.poweroff_after=*) poweroff_after="${arg#*=}" ;;
        qemud.panic_after=*) panic_after="${arg#*=}" ;;
        qemud.reboot_after=*) reboot_after="${arg#*=}" ;;
    esac
done

for m in @MODULES@; do
    [ -e "/lib/modules/$m.ko" ] || continue
    insmod "/lib/modules/$m.ko" || log "insmod $m failed"
done

# Wait (up to 2 s) for the event device(s) of the ACPI power button.
find_power_buttons() {
    i=0
    while [ $i -lt 20 ]; do
        devs=
        for ev in /sys/class/input/event*; do
            [ -e "$ev/device/name" ] || continue
            read -r name < "$ev/device/name"
            case "$name" in
                *"Power Button"*) devs="$devs /dev/input/${ev##*/}" ;;
            esac
        done
        if [ -n "$devs" ]; then
            echo "$devs"
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

if [ "$powerbutton" = ignore ]; then
    log "power button: ignored"
elif buttons="$(find_power_buttons)"; then
    fd=3
    for dev in $buttons; do
        # Open the device here, in PID 1, before the ready line: evdev only
        # queues events for open files, so a button press right after the
        # ready line must not race with the background reader opening it.
        eval "exec $fd<\"\$dev\""
        # evdev rejects reads shorter than one input_event, hence bs=4096.
        (
            dd of=/dev/null bs=4096 count=1 <&$fd 2>/dev/null || exit 0
            log "power button pressed: powering off"
            poweroff -f
        ) &
        fd=$((fd + 1))
    done
    log "power button: watching$buttons"
else
    log "power button: no input device found"
fi

if [ -n "$poweroff_after" ]; then
    ( sleep "$poweroff_after"; log "poweroff_after: powering off"; poweroff -f ) &
fi
if [ -n "$reboot_after" ]; then
    ( sleep "$reboot_after"; log "reboot_after: rebooting"; reboot -f ) &
fi
if [ -n "$panic_after" ]; then
    (
        sleep "$panic_after"
        log "panic_after: panicking"
        echo 1 > /proc/sys/kernel/sysrq
        echo c > /proc/sysrq-trigger
    ) &
fi

echo @READY@
while :; do
    sleep 3600
done
"""

_T = TypeVar("_T")

# Bump when the build procedure changes in a way the init script hash misses.
_RECIPE_REVISION = "1"


class GuestBuildError(RuntimeError):
    """Raised when the test guest cannot be built (apt, dpkg-deb or content problem)."""


@dataclasses.dataclass(frozen=True)
class Guest:
    """A built, cached test guest: kernel + initramfs, ready for ``qemu -kernel/-initrd``.

    ``version`` is the kernel package version (e.g. ``6.1.192-2``), ``package``
    its name, ``release`` the ``uname -r`` string and ``pvpanic`` whether the
    pvpanic modules were found and included.
    """

    kernel: Path
    initrd: Path
    version: str
    package: str
    release: str
    pvpanic: bool

    def cmdline(
        self,
        *,
        powerbutton: str | None = None,
        poweroff_after: float | None = None,
        panic_after: float | None = None,
        reboot_after: float | None = None,
    ) -> str:
        """Return the kernel command line for ``-append`` with the given guest switches.

        Without switches this is exactly `BASE_CMDLINE`.  Each switch adds a
        ``qemud.<name>=<value>`` word; ``panic_after`` also swaps ``panic=-1``
        for ``panic=0`` so the panicked guest halts and QEMU's panic action
        decides what happens.  Invalid values raise `ValueError`.
        """
        words = BASE_CMDLINE.split()
        if powerbutton is not None:
            if powerbutton not in ("ignore", "poweroff"):
                raise ValueError(f"powerbutton must be 'ignore' or 'poweroff', not {powerbutton!r}")
            words.append(f"qemud.powerbutton={powerbutton}")
        for name, value in (
            ("poweroff_after", poweroff_after),
            ("panic_after", panic_after),
            ("reboot_after", reboot_after),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
            words.append(f"qemud.{name}={_format_seconds(value)}")
        if panic_after is not None:
            words[words.index("panic=-1")] = "panic=0"
        return " ".join(words)


def _format_seconds(value: float) -> str:
    """Format a duration for busybox ``sleep``: integers without a decimal point."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def cache_root() -> Path:
    """Return the cache directory: ``$QEMUD_TEST_CACHE`` or ``~/.cache/qemud/test-guest``."""
    env = os.environ.get("QEMUD_TEST_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "qemud" / "test-guest"


def private_cache_root() -> Path:
    """Return `cache_root()`, created at mode 0700 (missing parents too) or made 0700 if ours.

    Guarantees that nobody else can change what the guests boot: an existing cache directory
    that is group- or world-accessible and owned by us is tightened; one owned by someone else
    is refused with `GuestBuildError`.
    """
    root = cache_root()
    missing: list[Path] = []
    probe = root
    while not os.path.lexists(probe) and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    st = os.stat(root)
    if st.st_uid != os.geteuid():
        raise GuestBuildError(f"{root} belongs to uid {st.st_uid}, not to you; set "
                              "QEMUD_TEST_CACHE to a directory of your own")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(root, 0o700)
    return root


def _init_script() -> str:
    """Return the /init script text with the module list and ready line filled in."""
    modules = " ".join(name for _, name, _ in _MODULES)
    return _INIT_SCRIPT.replace("@MODULES@", modules).replace("@READY@", READY_LINE)


def _recipe_hash() -> str:
    """Return a short hash of everything that shapes the build besides the kernel version."""
    h = hashlib.sha256()
    h.update(_RECIPE_REVISION.encode())
    h.update(_init_script().encode())
    h.update(repr(_MODULES).encode())
    return h.hexdigest()[:12]


_memo: dict[Path, Guest] = {}
_memo_lock = threading.Lock()


def build_guest() -> Guest:
    """Return the test guest, building and caching it on first use.

    Guarantees: the returned paths exist and are complete (published by an
    atomic rename); repeated calls in one process return the same object
    instantly; concurrent processes build at most once.  Raises
    `GuestBuildError` with the failing command's output if the build fails.
    """
    root = cache_root()
    refresh = os.environ.get("QEMUD_TEST_GUEST_REFRESH", "") not in ("", "0")
    with _memo_lock:
        if root in _memo:
            return _memo[root]
        private_cache_root()
        pointer = root / f"current-{_recipe_hash()}"
        guest = None if refresh else _load_pointer(pointer)
        if guest is None:
            with _flock(root / ".lock"):
                guest = None if refresh else _load_pointer(pointer)
                if guest is None:
                    guest = _build_locked(root, pointer)
        _memo[root] = guest
        return guest


def _load_pointer(pointer: Path) -> Guest | None:
    """Return the guest the pointer file names, or None if it is missing or incomplete."""
    try:
        name = pointer.read_text().strip()
    except OSError:
        return None
    return _load_build(pointer.parent / name) if name else None


def _load_build(target: Path) -> Guest | None:
    """Return the guest stored in a published build directory, or None if it is unusable."""
    try:
        meta = json.loads((target / "guest.json").read_text())
    except (OSError, ValueError):
        return None
    return _guest_from_meta(target, meta)


def _guest_from_meta(target: Path, meta: dict[str, object]) -> Guest | None:
    """Return a `Guest` for a published build directory, or None if files are missing."""
    kernel = target / "vmlinuz"
    initrd = target / "initramfs.cpio.gz"
    if not (kernel.is_file() and initrd.is_file()):
        return None
    try:
        return Guest(
            kernel=kernel,
            initrd=initrd,
            version=str(meta["version"]),
            package=str(meta["package"]),
            release=str(meta["release"]),
            pvpanic=bool(meta["pvpanic"]),
        )
    except KeyError:
        return None


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _build_locked(root: Path, pointer: Path) -> Guest:
    """Resolve, download and build the guest (caller holds the lock); publish it atomically."""
    for stale in root.glob("tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left over by a crashed build
    recipe = _recipe_hash()
    work = Path(tempfile.mkdtemp(prefix="tmp-", dir=root))
    try:
        fetched = _with_apt_update(lambda: _resolve_and_fetch(root, recipe, work / "debs"))
        if isinstance(fetched, Guest):  # this kernel version was built before
            _write_pointer(pointer, fetched.kernel.parent.name)
            return fetched
        package, version, final, debs = fetched
        out = work / "out"
        out.mkdir()
        release, pvpanic = _assemble(debs, out)
        meta = {
            "package": package,
            "version": version,
            "release": release,
            "pvpanic": pvpanic,
            "recipe": recipe,
            "busybox": debs["busybox"].name,
        }
        (out / "guest.json").write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)  # incomplete or corrupt earlier publish
        out.rename(final)
        _write_pointer(pointer, final.name)
        guest = _load_build(final)
        if guest is None:
            raise GuestBuildError(f"published guest in {final} is incomplete")
        return guest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_pointer(pointer: Path, name: str) -> None:
    """Atomically point ``pointer`` at the build directory ``name``."""
    tmp = pointer.with_name(f"{pointer.name}.tmp{os.getpid()}")
    tmp.write_text(name + "\n")
    tmp.replace(pointer)


def _safe(text: str) -> str:
    """Return ``text`` made safe as a single path component."""
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", text)


def _run(argv: list[str], cwd: Path | None = None) -> str:
    """Run a command and return its stdout; raise `GuestBuildError` with its output on failure."""
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise GuestBuildError(f"{argv[0]} not found: {exc}") from exc
    if proc.returncode != 0:
        raise GuestBuildError(
            f"command failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


def _resolve_kernel() -> tuple[str, str]:
    """Return (package, version) of the kernel the metapackage's candidate depends on."""
    show = _run(["apt-cache", "show", "--no-all-versions", KERNEL_METAPACKAGE])
    match = re.search(r"^Depends:.*?\b(linux-image-[0-9][^\s,|()]*)(?:\s*\(=\s*([^)\s]+)\))?", show,
                      re.MULTILINE)
    if not match:
        raise GuestBuildError(f"cannot find the kernel package in:\n{show}")
    package, version = match.group(1), match.group(2)
    if not version:
        show = _run(["apt-cache", "show", "--no-all-versions", package])
        vmatch = re.search(r"^Version:\s*(\S+)", show, re.MULTILINE)
        if not vmatch:
            raise GuestBuildError(f"cannot find the version of {package} in:\n{show}")
        version = vmatch.group(1)
    return package, version


class _Fetched(NamedTuple):
    """Downloaded packages for a build that does not exist yet."""

    package: str
    version: str
    final: Path
    debs: dict[str, Path]


def _resolve_and_fetch(root: Path, recipe: str, dest: Path) -> Guest | _Fetched:
    """Resolve the kernel; return its cached build if any, else download the .debs into ``dest``.

    The returned `_Fetched.debs` maps "kernel" and "busybox" to .deb files.
    """
    package, version = _resolve_kernel()
    final = root / f"{_safe(version)}-{recipe}"
    if (guest := _load_build(final)) is not None:
        return guest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    # APT::Sandbox::User=root: as root, the _apt user could not write into dest.
    _run(
        ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
         f"{package}={version}", BUSYBOX_PACKAGE],
        cwd=dest,
    )
    kernels = sorted(dest.glob(f"{package}_*.deb"))
    busyboxes = sorted(dest.glob(f"{BUSYBOX_PACKAGE}_*.deb"))
    if len(kernels) != 1 or len(busyboxes) != 1:
        raise GuestBuildError(f"unexpected downloads in {dest}: {sorted(os.listdir(dest))}")
    return _Fetched(package, version, final, {"kernel": kernels[0], "busybox": busyboxes[0]})


def _with_apt_update(action: Callable[[], _T]) -> _T:
    """Run an apt-based ``action``; if it fails, run ``apt-get update`` once and retry.

    This covers missing package lists (fresh container) and stale ones (the
    listed kernel version is gone from the mirror).  Raises `GuestBuildError`
    explaining both failures if the update or the retry fails.
    """
    try:
        return action()
    except GuestBuildError as first:
        try:
            _run(["apt-get", "update"])
        except GuestBuildError as exc:
            raise GuestBuildError(
                f"cannot fetch the test guest packages: {first}\n"
                f"and 'apt-get update' failed too: {exc}"
            ) from exc
        try:
            return action()
        except GuestBuildError as exc:
            raise GuestBuildError(
                f"cannot fetch the test guest packages even after 'apt-get update': {exc}"
            ) from exc


def _deb_members(deb: Path, wanted: dict[str, str]) -> dict[str, tuple[str, bytes]]:
    """Stream a .deb's data archive (``dpkg-deb --fsys-tarfile``) and pick regular files.

    ``wanted`` maps a key to a regular expression matched against each
    member path (without leading ``./``); the first match per key is returned
    as (path, content).  Symlinks are not followed.
    """
    patterns = {key: re.compile(rx) for key, rx in wanted.items()}
    found: dict[str, tuple[str, bytes]] = {}
    with subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.removeprefix("./")
                for key, rx in patterns.items():
                    if key not in found and rx.fullmatch(name):
                        fobj = tar.extractfile(member)
                        assert fobj is not None
                        found[key] = (name, fobj.read())
        proc.stdout.read()  # drain so dpkg-deb can exit
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise GuestBuildError(f"dpkg-deb --fsys-tarfile {deb} failed: {stderr.strip()}")
    return found


def _decompress_module(name: str, data: bytes) -> bytes:
    """Return the raw ELF of a kernel module stored as .ko, .ko.xz or .ko.gz."""
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko"):
        return data
    raise GuestBuildError(f"cannot decompress kernel module {name} (unsupported format)")


def _assemble(debs: dict[str, Path], out: Path) -> tuple[str, bool]:
    """Write ``vmlinuz`` and ``initramfs.cpio.gz`` into ``out``; return (release, has_pvpanic)."""
    wanted = {"vmlinuz": r"boot/vmlinuz-.+"}
    for suffix, name, _required in _MODULES:
        wanted[name] = rf"lib/modules/[^/]+/kernel/{re.escape(suffix)}(?:\.xz|\.gz|\.zst)?"
    kernel_files = _deb_members(debs["kernel"], wanted)
    if "vmlinuz" not in kernel_files:
        raise GuestBuildError(f"no boot/vmlinuz-* in {debs['kernel'].name}")
    vmlinuz_path, vmlinuz = kernel_files["vmlinuz"]
    release = vmlinuz_path.removeprefix("boot/vmlinuz-")

    modules: list[tuple[str, bytes]] = []
    for suffix, name, required in _MODULES:
        if name not in kernel_files:
            if required:
                raise GuestBuildError(f"kernel module {suffix} missing from {debs['kernel'].name}")
            continue
        path, data = kernel_files[name]
        if f"lib/modules/{release}/" not in path:
            raise GuestBuildError(f"module {path} does not belong to kernel {release}")
        modules.append((name, _decompress_module(path, data)))
    pvpanic = {"pvpanic", "pvpanic-mmio"} <= {name for name, _ in modules}

    bb_files = _deb_members(debs["busybox"], {"busybox": r"bin/busybox"})
    if "busybox" not in bb_files:
        raise GuestBuildError(f"no bin/busybox in {debs['busybox'].name}")

    cpio = _Newc()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp",
              "lib", "lib/modules", "root"):
        cpio.directory(d)
    cpio.device("dev/console", stat.S_IFCHR | 0o600, 5, 1)
    cpio.file("bin/busybox", bb_files["busybox"][1], 0o755)
    cpio.symlink("bin/sh", "busybox")
    for name, data in modules:
        cpio.file(f"lib/modules/{name}.ko", data, 0o644)
    cpio.file("init", _init_script().encode(), 0o755)

    (out / "vmlinuz").write_bytes(vmlinuz)
    (out / "initramfs.cpio.gz").write_bytes(gzip.compress(cpio.finish(), compresslevel=9, mtime=0))
    return release, pvpanic


class _Newc:
    """Minimal writer for the cpio "newc" (070701) format the kernel unpacks."""

    def __init__(self) -> None:
        """Start an empty archive."""
        self._chunks: list[bytes] = []
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        """Append one header + name + data, each padded to 4 bytes as newc requires."""
        path = str(PurePosixPath(name))
        encoded = path.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self._ino += 1
        self._chunks.append(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        if data:
            self._chunks.append(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        """Add a directory."""
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int) -> None:
        """Add a regular file with the given content and permissions."""
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link pointing at ``target``."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, mode: int, major: int, minor: int) -> None:
        """Add a device node (``mode`` includes S_IFCHR or S_IFBLK)."""
        self._entry(name, mode, rdev=(major, minor))

    def finish(self) -> bytes:
        """Return the archive bytes, terminated by the TRAILER!!! entry."""
        self._entry("TRAILER!!!", 0, nlink=1)
        return b"".join(self._chunks)


def link_guest(guest: Guest, directory: Path) -> tuple[Path, Path]:
    """Point ``directory/vmlinuz`` and ``directory/initramfs.cpio.gz`` at the cached guest.

    Creates the directory if needed and replaces each symlink atomically, so a
    concurrent reader sees either the old or the new target.  Returns the two
    link paths.
    """
    directory.mkdir(parents=True, exist_ok=True)
    links = []
    for name, target in (("vmlinuz", guest.kernel), ("initramfs.cpio.gz", guest.initrd)):
        link = directory / name
        tmp = directory / f".{name}.tmp{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        tmp.replace(link)
        links.append(link)
    return links[0], links[1]


def install_samples(source: Path, dest: Path, guest_dir: Path) -> list[str]:
    """Copy ``source/*.xml`` into ``dest``, keeping every file already there; return notes.

    ``dest`` is created private (0700); each new copy is written at mode 0600 with
    `GUEST_DIR_PLACEHOLDER` replaced by ``guest_dir``. A kept file that still boots the guest
    from the old shared directory earns a note saying what to change.
    """
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    notes = []
    for sample in sorted(source.glob("*.xml")):
        target = dest / sample.name
        text = sample.read_text().replace(GUEST_DIR_PLACEHOLDER, str(guest_dir))
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if _OLD_SHARED_DIR in target.read_text(errors="replace"):
                notes.append(f"{target} boots the test guest from {_OLD_SHARED_DIR}, which is "
                             f"no longer kept up to date; write {guest_dir} there instead")
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    return notes


def main(argv: list[str] | None = None) -> int:
    """Command line: build (or reuse) the guest, point the stable links at it, print its files.

    With ``--samples SRC DEST``, also copy the sample domains (see `install_samples`).
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.support.guest",
        description="Build (cached) the qemud test guest: Debian cloud kernel + busybox initramfs.",
    )
    parser.add_argument(
        "--samples",
        nargs=2,
        type=Path,
        metavar=("SRC", "DEST"),
        help=f"also copy SRC/*.xml into DEST (files there kept), {GUEST_DIR_PLACEHOLDER} "
        "replaced by the guest's directory",
    )
    args = parser.parse_args(argv)
    try:
        guest = build_guest()
    except GuestBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    kernel, initrd = link_guest(guest, cache_root())
    print(f"kernel:  {kernel}")
    print(f"initrd:  {initrd}")
    print(f"version: {guest.package} {guest.version} ({guest.release})")
    print(f"cmdline: {guest.cmdline()}")
    if args.samples is not None:
        for note in install_samples(args.samples[0], args.samples[1], cache_root()):
            print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
