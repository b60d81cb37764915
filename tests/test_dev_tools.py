"""The development tooling: the test guest's cache is private, and `./dev run`'s sample copies."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import model
from tests.support import guest as guest_mod

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_cache_is_made_private_with_its_missing_parents(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "home" / ".cache" / "qemud" / "test-guest"
    monkeypatch.setenv("QEMUD_TEST_CACHE", str(root))
    (tmp_path / "home").mkdir(mode=0o755)
    assert guest_mod.private_cache_root() == root
    for path in (root, root.parent, root.parent.parent):
        assert mode(path) == 0o700, path
    assert mode(tmp_path / "home") == 0o755  # what existed is not ours to change


def test_an_existing_cache_open_to_others_is_tightened(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    monkeypatch.setenv("QEMUD_TEST_CACHE", str(root))
    guest_mod.private_cache_root()
    assert mode(root) == 0o700


def test_samples_are_installed_with_the_guest_directory_and_edits_kept(tmp_path: Path) -> None:
    source = tmp_path / "samples"
    source.mkdir()
    (source / "testguest.xml").write_text((ROOT / "samples" / "testguest.xml").read_text())
    (source / "other.xml").write_text("<domain/>\n")
    dest = tmp_path / "conf"
    dest.mkdir(mode=0o700)
    (dest / "other.xml").write_text("my edit\n")
    notes = guest_mod.install_samples(source, dest, Path("/home/u/.cache/qemud/test-guest"))
    assert notes == []
    assert (dest / "other.xml").read_text() == "my edit\n"
    copy = dest / "testguest.xml"
    assert mode(copy) == 0o600
    assert guest_mod.GUEST_DIR_PLACEHOLDER not in copy.read_text()
    domain = model.parse_file(copy).domain
    assert domain.os.kernel == "/home/u/.cache/qemud/test-guest/vmlinuz"
    assert domain.os.initrd == "/home/u/.cache/qemud/test-guest/initramfs.cpio.gz"


def test_a_kept_copy_booting_the_old_shared_directory_gets_a_note(tmp_path: Path) -> None:
    source = tmp_path / "samples"
    source.mkdir()
    (source / "testguest.xml").write_text((ROOT / "samples" / "testguest.xml").read_text())
    dest = tmp_path / "new-conf"
    old = (ROOT / "samples" / "testguest.xml").read_text().replace(
        guest_mod.GUEST_DIR_PLACEHOLDER, "/var/tmp/qemud/test-guest")
    notes = guest_mod.install_samples(source, dest, Path("/c"))
    assert mode(dest) == 0o700 and notes == []
    (dest / "testguest.xml").write_text(old)
    notes = guest_mod.install_samples(source, dest, Path("/c"))
    assert notes == [f"{dest / 'testguest.xml'} boots the test guest from "
                     "/var/tmp/qemud/test-guest, which is no longer kept up to date; write /c "
                     "there instead"]
    assert (dest / "testguest.xml").read_text() == old


@pytest.mark.parametrize("path", ["justfile", "dev", "README.md", "samples/testguest.xml"])
def test_nothing_points_at_a_shared_test_guest_directory(path: str) -> None:
    assert "/var/tmp" not in (ROOT / path).read_text()
