"""Directory layout, private-directory checks and socket path limits."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.errors import (
    InvalidIdentifierError,
    ReconcilerError,
    SocketPathTooLongError,
    UnsafeDirectoryError,
)
from reconciler.paths import (
    MAX_SOCKET_PATH,
    Layout,
    VmPaths,
    canonical_uuid,
    check_socket_path,
    ensure_private_dir,
)

UUID = "4b24e0b7-d641-45e7-9ab2-88d7146a13dc"
OTHER_UID = 12345


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run the test under umask 022 (the usual default), restoring the old one."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh dir directly in /tmp: pytest's tmp_path is too deep for socket paths."""
    path = Path(tempfile.mkdtemp(prefix="qp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def mode(path: Path) -> int:
    """Permission bits of ``path``."""
    return path.stat().st_mode & 0o7777


def test_session_layout() -> None:
    lay = Layout.session(Path("/home/ann"))
    assert lay == Layout(
        config_dir=Path("/home/ann/.qemud"),
        run_dir=Path("/home/ann/.qemud/run"),
        log_dir=Path("/home/ann/.qemud/log"),
        status_dir=Path("/home/ann/.qemud/status"),
    )


def test_under_is_session_shape_for_any_dir() -> None:
    lay = Layout.under(Path("/srv/q"))
    assert (lay.config_dir, lay.run_dir, lay.log_dir, lay.status_dir) == (
        Path("/srv/q"),
        Path("/srv/q/run"),
        Path("/srv/q/log"),
        Path("/srv/q/status"),
    )


def test_system_layout() -> None:
    lay = Layout.system()
    assert lay == Layout(
        config_dir=Path("/etc/qemud"),
        run_dir=Path("/run/qemud"),
        log_dir=Path("/var/log/qemud"),
        status_dir=Path("/run/qemud/status"),
        system_instance=True,
        state_root=Path("/var/lib/qemud"),
    )
    assert lay.state_dir(UUID) == Path("/var/lib/qemud") / UUID
    assert Layout.under(Path("/q")).state_dir(UUID) == Path("/q/state") / UUID


def test_per_vm_paths() -> None:
    lay = Layout.under(Path("/q"))
    assert lay.vm("web", UUID) == VmPaths(
        vm_dir=Path(f"/q/run/{UUID}"),
        qmp_socket=Path(f"/q/run/{UUID}/qmp.sock"),
        pidfile=Path(f"/q/run/{UUID}/qemu.pid"),
        log_file=Path("/q/log/web.log"),
        console_log=Path("/q/log/web.console.log"),
        user_qmp_socket=Path(f"/q/run/{UUID}/qmp-user.sock"),
    )


def test_the_users_monitor_is_where_the_command_line_puts_it() -> None:
    """`reconcile monitor` (paths, no model import) and QEMU's argv (model) agree on the path."""
    import model

    paths = Layout.under(Path("/q")).vm("web", UUID)
    runtime = model.Runtime(paths.qmp_socket, paths.pidfile, paths.console_log)
    assert runtime.user_qmp_socket == paths.user_qmp_socket


def test_uuid_is_canonicalised() -> None:
    assert canonical_uuid(UUID.upper()) == UUID
    assert canonical_uuid(UUID.replace("-", "")) == UUID
    assert Layout.under(Path("/q")).vm_dir(UUID.upper()) == Path(f"/q/run/{UUID}")


@pytest.mark.parametrize("bad", ["", "../../etc", "not-a-uuid", UUID + "0"])
def test_bad_uuid_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="not a UUID"):
        Layout.under(Path("/q")).vm_dir(bad)


@pytest.mark.parametrize("bad", ["", "a/b", "../x", ".hidden", "nul\0"])
def test_bad_name_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        Layout.under(Path("/q")).log_file(bad)
    assert info.value.kind == "name"
    assert "fix:" in str(info.value)


def test_missing_dirs_created_0700_despite_umask(short_tmp: Path, umask_022: None) -> None:
    lay = Layout.under(short_tmp / "a" / "b")
    lay.ensure()
    for directory in (short_tmp / "a", lay.config_dir, lay.run_dir, lay.log_dir, lay.status_dir):
        assert directory.is_dir()
        assert mode(directory) == 0o700, directory


def test_created_mode_is_exact_even_under_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o777)
    try:
        ensure_private_dir(tmp_path / "d")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d") == 0o700


def test_existing_private_dir_accepted_and_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o755)  # readable by others is fine, writable is not
    assert ensure_private_dir(d) == d
    assert mode(d) == 0o755


@pytest.mark.parametrize(
    ("bits", "problem"),
    [
        (0o775, "group-writable (mode 0775)"),
        (0o757, "world-writable (mode 0757)"),
        (0o777, "group- and world-writable (mode 0777)"),
        (0o1777, "group- and world-writable (mode 1777)"),
    ],
)
def test_writable_by_others_refused(tmp_path: Path, bits: int, problem: str) -> None:
    d = tmp_path / ".qemud"
    d.mkdir()
    d.chmod(bits)
    with pytest.raises(UnsafeDirectoryError) as info:
        ensure_private_dir(d)
    assert str(info.value) == f"{d}: {problem}; fix: chmod 0700 {d}"
    assert info.value.path == d
    assert mode(d) == bits, "the check must not silently fix anything"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_foreign_owner_refused(tmp_path: Path) -> None:
    d = tmp_path / ".qemud"
    d.mkdir(mode=0o700)
    os.chown(d, OTHER_UID, -1)
    with pytest.raises(UnsafeDirectoryError) as info:
        ensure_private_dir(d)
    euid = os.geteuid()
    assert str(info.value) == f"{d}: owned by uid {OTHER_UID}, not {euid}; fix: chown {euid} {d}"


def test_symlink_refused_even_to_a_good_dir(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UnsafeDirectoryError, match=f"is a symlink to {real}"):
        ensure_private_dir(link)


def test_regular_file_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(UnsafeDirectoryError, match="not a directory"):
        ensure_private_dir(f)


def test_layout_ensure_checks_every_dir(short_tmp: Path) -> None:
    lay = Layout.under(short_tmp / "q")
    lay.ensure()
    lay.log_dir.chmod(0o770)
    with pytest.raises(UnsafeDirectoryError, match="log: group-writable"):
        lay.ensure()


def test_socket_path_limit() -> None:
    fits = Path("/" + "x" * (MAX_SOCKET_PATH - 1))
    assert check_socket_path(fits) == fits
    too_long = Path("/" + "x" * MAX_SOCKET_PATH)
    with pytest.raises(SocketPathTooLongError) as info:
        check_socket_path(too_long)
    err = info.value
    assert (err.path, err.length, err.limit) == (too_long, 108, 107)
    assert str(too_long) in str(err)
    assert "shorter --config-dir" in str(err)


def test_socket_length_counts_bytes_not_characters() -> None:
    path = Path("/" + "é" * 60)  # 121 bytes in UTF-8, 61 characters
    with pytest.raises(SocketPathTooLongError):
        check_socket_path(path)


def test_layout_ensure_refuses_too_deep_config_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60)
    with pytest.raises(SocketPathTooLongError, match=r"qmp-user\.sock"):
        Layout.under(deep).ensure()  # the longest of a VM's socket paths decides


def test_all_errors_share_the_root() -> None:
    for cls in (UnsafeDirectoryError, SocketPathTooLongError, InvalidIdentifierError):
        assert issubclass(cls, ReconcilerError)
