"""The config-directory scanner: which files count, the stat cache, last known good, clashes."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import model
from reconciler.scan import (
    RACY_NS,
    Candidate,
    Conflict,
    FileKey,
    Invalid,
    Scanner,
    is_domain_file,
    resolve,
)

U1 = uuidlib.UUID("11111111-1111-4111-8111-111111111111")
U2 = uuidlib.UUID("22222222-2222-4222-8222-222222222222")
U3 = uuidlib.UUID("33333333-3333-4333-8333-333333333333")



def long_after() -> int:
    """A clock far past every file's mtime: no entry is racily clean, keys alone decide."""
    return 2**62


def dom(name: str, uuid: uuidlib.UUID | None = None, memory: int = 64, state: str = "running") -> bytes:
    """A minimal valid domain file."""
    uuid_el = f"<uuid>{uuid}</uuid>" if uuid is not None else ""
    return (f"<domain type='qemu'>\n<name>{name}</name>\n{uuid_el}\n"
            f"<memory unit='MiB'>{memory}</memory>\n<os><type arch='x86_64'>hvm</type></os>\n"
            f"<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='{state}'/></metadata>\n"
            f"</domain>\n").encode()


# line 4 holds the bad <memory>
BAD_MEMORY = (b"<domain type='qemu'>\n<name>a</name>\n<uuid>" + str(U1).encode() + b"</uuid>\n"
              b"<memory unit='MiB'>banana</memory>\n<os><type arch='x86_64'>hvm</type></os>\n</domain>\n")
BAD_MEMORY_LINE = 4
# line 3 has the mismatched end tag
NOT_WELL_FORMED = b"<domain type='qemu'>\n<name>a</name>\n</domian>\n"
NOT_WELL_FORMED_LINE = 3


class CountingParse:
    """A `parse` for `Scanner` that records which files it was asked to parse."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, data: bytes, file: str) -> model.Parsed:
        self.calls.append(Path(file).name)
        return model.parse(data, file)


@pytest.fixture
def counting() -> CountingParse:
    return CountingParse()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def key_of(path: Path) -> FileKey:
    st = path.stat()
    return FileKey(st.st_mtime_ns, st.st_size, st.st_ino)


def names(scanner: Scanner) -> dict[str, str]:
    """One scan as {file name: domain name}."""
    scan = scanner.scan()
    return {c.path.name: c.name for c in scan.domains.values()}


# ------------------------------------------------------------------ which entries count


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("web.xml", True),
        ("a.b.xml", True),
        ("x", False),
        ("web.XML", False),
        ("web.xml.bak", False),
        (".web.xml", False),
        (".#web.xml", False),
        ("#web.xml#", False),
        ("#web.xml", False),
        ("web.xml~", False),
        ("web.xml.swp", False),
        (".web.xml.swp", False),
        ("web.xml.tmp", False),
        ("web.tmp", False),
        ("web.txt", False),
        ("xml", False),
    ],
)
def test_is_domain_file(name: str, counts: bool) -> None:
    assert is_domain_file(name) is counts


@contextlib.contextmanager
def unix_socket(path: Path) -> Iterator[None]:
    """A listening unix socket bound at `path` (a short relative path, for the length limit)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = Path.cwd()
    os.chdir(path.parent)
    try:
        sock.bind(path.name)
        yield
    finally:
        os.chdir(old)
        sock.close()


@pytest.mark.timeout(30)
def test_only_xml_files_directly_in_the_directory_count(tmp_path: Path, counting: CountingParse) -> None:
    write(tmp_path / "good.xml", dom("good"))
    debris = [".hidden.xml", ".#good.xml", "#good.xml#", "good.xml~", "good.xml.swp", "good.xml.tmp",
              "good.tmp", "good.txt", "good"]
    for i, fname in enumerate(debris):
        write(tmp_path / fname, dom(f"debris{i}"))
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "nested.xml", dom("nested"))
    (tmp_path / "dir.xml").mkdir()
    write(tmp_path / "dir.xml" / "inner.xml", dom("inner"))
    os.mkfifo(tmp_path / "fifo.xml")  # opening it would block the scanner forever
    with unix_socket(tmp_path / "sock.xml"):
        scanner = Scanner(tmp_path, clock_ns=long_after, parse=counting)
        scan = scanner.scan()
    assert {c.name for c in scan.domains.values()} == {"good"}
    assert scan.invalid == ()
    assert scan.conflicts == ()
    assert counting.calls == ["good.xml"]
    assert scan.parsed == 1


def test_a_missing_directory_is_an_empty_scan(tmp_path: Path) -> None:
    scan = Scanner(tmp_path / "nope", clock_ns=long_after).scan()
    assert (dict(scan.domains), scan.conflicts, scan.invalid, scan.parsed) == ({}, (), (), 0)


def test_symlinked_file_counts_but_a_dangling_link_does_not(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    target = write(tmp_path / "elsewhere.xml", dom("linked"))
    (cfg / "linked.xml").symlink_to(target)
    (cfg / "dangling.xml").symlink_to(tmp_path / "missing.xml")
    scan = Scanner(cfg, clock_ns=long_after).scan()
    assert [c.name for c in scan.domains.values()] == ["linked"]
    assert scan.invalid == ()


# ------------------------------------------------------------------ the stat cache


def test_an_unchanged_file_is_never_reparsed(tmp_path: Path, counting: CountingParse) -> None:
    write(tmp_path / "a.xml", dom("a", U1))
    write(tmp_path / "b.xml", dom("b", U2))
    scanner = Scanner(tmp_path, clock_ns=long_after, parse=counting)
    first = scanner.scan()
    assert first.parsed == 2
    assert sorted(counting.calls) == ["a.xml", "b.xml"]
    for _ in range(3):
        again = scanner.scan()
        assert again.parsed == 0
        assert sorted(counting.calls) == ["a.xml", "b.xml"]
        assert again.domains == first.domains


def test_an_invalid_unchanged_file_is_not_reparsed_either(tmp_path: Path, counting: CountingParse) -> None:
    write(tmp_path / "bad.xml", NOT_WELL_FORMED)
    scanner = Scanner(tmp_path, clock_ns=long_after, parse=counting)
    assert scanner.scan().parsed == 1
    second = scanner.scan()
    assert second.parsed == 0
    assert counting.calls == ["bad.xml"]
    assert [i.path.name for i in second.invalid] == ["bad.xml"]


def touch(path: Path, data: bytes) -> None:
    """Same content, same inode, a new mtime."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def rename_over(path: Path, data: bytes) -> None:
    """New content of the same size written to a temp file and renamed over, mtime kept."""
    st = path.stat()
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def grow_in_place(path: Path, data: bytes) -> None:
    """Longer content written into the same inode, mtime put back."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    ("change", "new_memory", "differs"),
    [
        (touch, 64, "mtime_ns"),
        (rename_over, 65, "inode"),
        (grow_in_place, 640, "size"),
    ],
    ids=["touched", "same-size-rename-over", "size-change"],
)
def test_a_changed_key_is_reparsed(tmp_path: Path, counting: CountingParse, change: object,
                                   new_memory: int, differs: str) -> None:
    path = write(tmp_path / "a.xml", dom("a", U1, memory=64))
    write(tmp_path / "other.xml", dom("other", U2))
    scanner = Scanner(tmp_path, clock_ns=long_after, parse=counting)
    scanner.scan()
    before = key_of(path)
    counting.calls.clear()
    change(path, dom("a", U1, memory=new_memory))  # type: ignore[operator]
    after = key_of(path)
    # exactly one component of the key changed: the scanner must notice it alone
    changed = {f for f in ("mtime_ns", "size", "inode") if getattr(before, f) != getattr(after, f)}
    assert changed == {differs}
    scan = scanner.scan()
    assert scan.parsed == 1
    assert counting.calls == ["a.xml"]
    assert scan.domains[U1].parsed.domain.memory == new_memory * 1024 * 1024
    assert scan.domains[U1].key == after
    assert scanner.scan().parsed == 0


def test_the_key_is_the_whole_story(tmp_path: Path, counting: CountingParse) -> None:
    """A same-size in-place rewrite with the mtime put back is invisible by design (one stat per file)."""
    path = write(tmp_path / "a.xml", dom("a", U1, memory=64))
    scanner = Scanner(tmp_path, clock_ns=long_after, parse=counting)
    scanner.scan()
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(dom("a", U1, memory=65))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key_of(path) == FileKey(st.st_mtime_ns, st.st_size, st.st_ino)
    scan = scanner.scan()
    assert scan.parsed == 0
    assert scan.domains[U1].parsed.domain.memory == 64 * 1024 * 1024


# ------------------------------------------------------------------ last known good


def test_a_known_domain_whose_file_breaks_keeps_its_definition(tmp_path: Path) -> None:
    path = write(tmp_path / "a.xml", dom("a", U1, memory=64))
    scanner = Scanner(tmp_path, clock_ns=long_after)
    good = scanner.scan().domains[U1]
    assert good.errors == ()
    path.write_bytes(BAD_MEMORY)
    os.utime(path, ns=(good.key.mtime_ns + 10**9, good.key.mtime_ns + 10**9))
    scan = scanner.scan()
    assert scan.parsed == 1
    assert scan.invalid == ()
    cand = scan.domains[U1]
    assert cand.parsed is good.parsed
    assert cand.parsed.domain.memory == 64 * 1024 * 1024
    assert cand.key == good.key  # the version in effect, not the broken one
    assert len(cand.errors) == 1
    issue = cand.errors[0]
    assert issue.file == str(path)
    assert issue.line == BAD_MEMORY_LINE
    assert "banana" in issue.message
    # still so on the next pass (without reparsing)
    again = scanner.scan()
    assert again.parsed == 0
    assert again.domains[U1].errors == cand.errors
    # a second broken version: still the last good one, with the new errors
    path.write_bytes(NOT_WELL_FORMED)
    os.utime(path, ns=(good.key.mtime_ns + 2 * 10**9, good.key.mtime_ns + 2 * 10**9))
    broken = scanner.scan().domains[U1]
    assert broken.parsed is good.parsed
    assert [(e.file, e.line) for e in broken.errors] == [(str(path), NOT_WELL_FORMED_LINE)]
    # fixed: the new definition, no errors
    path.write_bytes(dom("a", U1, memory=128))
    fixed = scanner.scan().domains[U1]
    assert fixed.errors == ()
    assert fixed.parsed.domain.memory == 128 * 1024 * 1024
    assert fixed.key == key_of(path)


@pytest.mark.parametrize(("data", "line"), [(BAD_MEMORY, BAD_MEMORY_LINE),
                                             (NOT_WELL_FORMED, NOT_WELL_FORMED_LINE)])
def test_a_new_invalid_file_is_listed_as_invalid(tmp_path: Path, data: bytes, line: int) -> None:
    write(tmp_path / "ok.xml", dom("ok", U2))
    path = write(tmp_path / "bad.xml", data)
    scan = Scanner(tmp_path, clock_ns=long_after).scan()
    assert list(scan.domains) == [U2]
    assert len(scan.invalid) == 1
    bad = scan.invalid[0]
    assert bad.path == path
    assert [(e.file, e.line) for e in bad.errors] == [(str(path), line)]


def test_invalid_files_are_sorted_by_path(tmp_path: Path) -> None:
    for fname in ("c.xml", "a.xml", "b.xml"):
        write(tmp_path / fname, NOT_WELL_FORMED)
    scan = Scanner(tmp_path, clock_ns=long_after).scan()
    assert [i.path.name for i in scan.invalid] == ["a.xml", "b.xml", "c.xml"]
    assert all(isinstance(i, Invalid) and i.errors for i in scan.invalid)


def test_an_unreadable_file_is_invalid_not_fatal_and_keeps_its_last_good(tmp_path: Path) -> None:
    """Read errors (EACCES, EIO, a file vanishing mid-read) are reported like parse errors."""
    fail = {"on": False}

    def parse(data: bytes, file: str) -> model.Parsed:
        if fail["on"] and Path(file).name in ("known.xml", "new.xml"):
            raise PermissionError(13, "Permission denied")
        return model.parse(data, file)

    known = write(tmp_path / "known.xml", dom("known", U1))
    scanner = Scanner(tmp_path, clock_ns=long_after, parse=parse)
    good = scanner.scan().domains[U1]
    fail["on"] = True
    touch(known, b"")
    new = write(tmp_path / "new.xml", dom("new", U2))
    scan = scanner.scan()
    assert scan.domains[U1].parsed is good.parsed
    assert [(e.file, e.line) for e in scan.domains[U1].errors] == [(str(known), None)]
    assert "cannot read" in scan.domains[U1].errors[0].message
    assert [i.path for i in scan.invalid] == [new]
    assert "Permission denied" in scan.invalid[0].errors[0].message


# ------------------------------------------------------------------ identity across renames


@pytest.mark.parametrize("uuid", [U1, None], ids=["explicit-uuid", "uuid-from-name"])
def test_a_renamed_file_keeps_its_uuid(tmp_path: Path, uuid: uuidlib.UUID | None) -> None:
    old = write(tmp_path / "a.xml", dom("vm", uuid))
    scanner = Scanner(tmp_path, clock_ns=long_after)
    (first,) = scanner.scan().domains.items()
    expected = uuid if uuid is not None else model.uuid_for_name("vm")
    assert first[0] == expected
    new = tmp_path / "renamed.xml"
    old.rename(new)
    scan = scanner.scan()
    assert list(scan.domains) == [expected]
    assert scan.domains[expected].path == new
    assert scan.parsed == 0  # the same inode, unchanged: known without reading it again


def test_a_renamed_invalid_file_keeps_its_last_valid_definition(tmp_path: Path) -> None:
    """An invalid file renamed (mv) still means what it did: its last valid version."""
    path = write(tmp_path / "a.xml", dom("vm", U1))
    scanner = Scanner(tmp_path, clock_ns=long_after)
    scanner.scan()
    path.write_bytes(NOT_WELL_FORMED)
    kept = scanner.scan()
    assert [c.path.name for c in kept.domains.values()] == ["a.xml"]
    path.rename(tmp_path / "b.xml")
    scan = scanner.scan()
    [cand] = scan.domains.values()
    assert cand.path.name == "b.xml" and cand.uuid == U1 and cand.errors


def test_a_new_scanner_takes_a_persisted_definition_for_an_invalid_file(tmp_path: Path) -> None:
    """A daemon restarted while a running VM's file is invalid: the definition in its runtime
    folder, known by the file's path or inode, is that file's last valid version."""
    path = write(tmp_path / "a.xml", dom("vm", U1))
    definition = Scanner(tmp_path, clock_ns=long_after).scan().domains[U1].parsed
    path.write_bytes(NOT_WELL_FORMED)
    assert Scanner(tmp_path, clock_ns=long_after).scan().domains == {}
    by_path = Scanner(tmp_path, clock_ns=long_after).scan(known={str(path): definition})
    assert by_path.domains[U1].path == path and by_path.domains[U1].errors
    moved = tmp_path / "moved.xml"
    inode = path.stat().st_ino
    path.rename(moved)
    by_inode = Scanner(tmp_path, clock_ns=long_after).scan(known={inode: definition})
    assert by_inode.domains[U1].path == moved


def test_a_deleted_file_disappears(tmp_path: Path, counting: CountingParse) -> None:
    a = write(tmp_path / "a.xml", dom("a", U1))
    write(tmp_path / "b.xml", dom("b", U2))
    bad = write(tmp_path / "bad.xml", NOT_WELL_FORMED)
    scanner = Scanner(tmp_path, clock_ns=long_after, parse=counting)
    assert set(scanner.scan().domains) == {U1, U2}
    a.unlink()
    bad.unlink()
    scan = scanner.scan()
    assert set(scan.domains) == {U2}
    assert scan.invalid == ()
    assert scan.parsed == 0


def test_a_deleted_file_forgets_its_last_good_version(tmp_path: Path) -> None:
    a = write(tmp_path / "a.xml", dom("a", U1))
    scanner = Scanner(tmp_path, clock_ns=long_after)
    scanner.scan()
    a.unlink()
    scanner.scan()
    write(tmp_path / "a.xml", BAD_MEMORY)
    scan = scanner.scan()
    assert dict(scan.domains) == {}
    assert [i.path for i in scan.invalid] == [a]


# ------------------------------------------------------------------ clashes

# files: (file name, domain name, uuid); running: {uuid: file name};
# expected: winning file names, and conflicts as (loser, winner, kind)
CLASHES = [
    pytest.param(
        [("a.xml", "a", U1), ("b.xml", "b", U2)], {},
        {"a.xml", "b.xml"}, [],
        id="no-clash"),
    pytest.param(
        [("x.xml", "web", U1), ("web.xml", "web", U2)], {},
        {"web.xml"}, [("x.xml", "web.xml", "name")],
        id="name-clash-name.xml-wins"),
    pytest.param(
        [("b.xml", "web", U1), ("a.xml", "web", U2)], {},
        {"a.xml"}, [("b.xml", "a.xml", "name")],
        id="name-clash-sort-order-wins"),
    pytest.param(
        [("zz.xml", "web", U1), ("web.xml", "web", U2)], {U1: "zz.xml"},
        {"zz.xml"}, [("web.xml", "zz.xml", "name")],
        id="name-clash-running-wins"),
    pytest.param(
        [("m.xml", "other", U1), ("z.xml", "z", U1)], {},
        {"z.xml"}, [("m.xml", "z.xml", "uuid")],
        id="uuid-clash-name.xml-wins"),
    pytest.param(
        [("b.xml", "one", U1), ("a.xml", "two", U1)], {},
        {"a.xml"}, [("b.xml", "a.xml", "uuid")],
        id="uuid-clash-sort-order-wins"),
    pytest.param(
        [("a.xml", "a", U1), ("b.xml", "b", U1)], {U1: "b.xml"},
        {"b.xml"}, [("a.xml", "b.xml", "uuid")],
        id="uuid-clash-running-wins"),
    pytest.param(
        [("a.xml", "a", U1), ("b.xml", "b", U1)], {U1: "gone.xml"},
        {"a.xml"}, [("b.xml", "a.xml", "uuid")],
        id="running-from-another-file-does-not-count"),
    pytest.param(
        [("a.xml", "a", U1), ("b.xml", "b", U1)], {U2: "b.xml"},
        {"a.xml"}, [("b.xml", "a.xml", "uuid")],
        id="running-under-another-uuid-does-not-count"),
    pytest.param(
        [("c.xml", "web", U1), ("b.xml", "web", U2), ("web.xml", "web", U3)], {},
        {"web.xml"}, [("b.xml", "web.xml", "name"), ("c.xml", "web.xml", "name")],
        id="three-way-name-clash"),
    pytest.param(
        [("a.xml", "a", U1), ("a2.xml", "a", U1), ("b.xml", "a", U2)], {},
        {"a.xml"}, [("a2.xml", "a.xml", "uuid"), ("b.xml", "a.xml", "name")],
        id="uuid-and-name-clash"),
]


def _candidates(root: Path, files: list[tuple[str, str, uuidlib.UUID]]) -> list[Candidate]:
    out = []
    for i, (fname, name, uuid) in enumerate(files):
        path = root / fname
        out.append(Candidate(path, FileKey(i, i, i), model.parse(dom(name, uuid), str(path))))
    return out


def _shape(root: Path, winners: dict[uuidlib.UUID, Candidate],
           conflicts: list[Conflict] | tuple[Conflict, ...]) -> tuple[set[str], list[tuple[str, str, str]]]:
    for uuid, cand in winners.items():
        assert cand.uuid == uuid
    return ({c.path.name for c in winners.values()},
            sorted((c.loser.name, c.winner.name, c.kind) for c in conflicts))


@pytest.mark.parametrize(("files", "running", "winners", "conflicts"), CLASHES)
def test_resolve(files: list[tuple[str, str, uuidlib.UUID]], running: dict[uuidlib.UUID, str],
                 winners: set[str], conflicts: list[tuple[str, str, str]]) -> None:
    root = Path("/cfg")
    run = {u: root / f for u, f in running.items()}
    cands = _candidates(root, files)
    results = set()
    for perm in itertools.permutations(cands):
        won, lost = resolve(perm, run)
        assert _shape(root, won, lost) == (winners, conflicts)
        results.add((tuple(sorted((str(u), str(c.path)) for u, c in won.items())), tuple(lost)))
    assert len(results) == 1, "resolve depends on the input order"


@pytest.mark.parametrize(("files", "running", "winners", "conflicts"), CLASHES)
def test_scan_resolves_clashes(tmp_path: Path, files: list[tuple[str, str, uuidlib.UUID]],
                               running: dict[uuidlib.UUID, str], winners: set[str],
                               conflicts: list[tuple[str, str, str]]) -> None:
    for fname, name, uuid in files:
        write(tmp_path / fname, dom(name, uuid))
    scan = Scanner(tmp_path, clock_ns=long_after).scan({u: tmp_path / f for u, f in running.items()})
    assert _shape(tmp_path, dict(scan.domains), scan.conflicts) == (winners, conflicts)
    by_file = {c.path.name: c for c in scan.domains.values()}
    for conflict in scan.conflicts:
        # the loser is described by its own name and uuid, and its message names both files
        loser = next(f for f in files if f[0] == conflict.loser.name)
        assert (conflict.name, conflict.uuid) == (loser[1], loser[2])
        assert conflict.winner.name in by_file
        # each side's message names the other file at the line of the clashing element
        assert conflict.loser_line is not None and conflict.winner_line is not None
        msg = conflict.message()
        assert f"{conflict.winner}:{conflict.winner_line}" in msg and conflict.loser.name in msg
        assert (conflict.name if conflict.kind == "name" else str(conflict.uuid)) in msg
        assert conflict.issue(conflict.loser).line == conflict.loser_line
        assert f"{conflict.loser}:{conflict.loser_line}" in conflict.message(conflict.winner)
        assert conflict.issue(conflict.winner).line == conflict.winner_line
    assert scan.invalid == ()


def test_a_clash_loser_that_is_invalid_now_still_loses_with_its_last_good_version(tmp_path: Path) -> None:
    write(tmp_path / "web.xml", dom("web", U1))
    copy = write(tmp_path / "copy.xml", dom("web", U2))
    scanner = Scanner(tmp_path, clock_ns=long_after)
    scanner.scan()
    copy.write_bytes(NOT_WELL_FORMED + b"\n")
    scan = scanner.scan()
    assert [c.path.name for c in scan.domains.values()] == ["web.xml"]
    assert [(c.loser.name, c.winner.name) for c in scan.conflicts] == [("copy.xml", "web.xml")]


def test_a_racily_clean_file_is_read_again_on_the_next_pass(tmp_path: Path,
                                                            counting: CountingParse) -> None:
    """Written within RACY_NS of being read, a file may change again keeping (mtime, size,
    inode) (coarse mtime ticks): it is read once more on the next pass, then trusted."""
    path = write(tmp_path / "a.xml", dom("a", U1, memory=64))
    st = path.stat()
    now = [st.st_mtime_ns + 1]  # read in the same tick as the write: racy
    scanner = Scanner(tmp_path, parse=counting, clock_ns=lambda: now[0])
    assert scanner.scan().parsed == 1
    with open(path, "r+b") as fh:  # same size, same inode, mtime put back: the key is unchanged
        fh.write(dom("a", U1, memory=65))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key_of(path) == FileKey(st.st_mtime_ns, st.st_size, st.st_ino)
    now[0] = st.st_mtime_ns + RACY_NS  # by now the entry is old enough to be trusted
    scan = scanner.scan()
    assert scan.parsed == 1
    assert scan.domains[U1].parsed.domain.memory == 65 * 1024 * 1024
    assert scanner.scan().parsed == 0


def test_a_racy_reread_without_change_keeps_the_same_objects(tmp_path: Path) -> None:
    path = write(tmp_path / "a.xml", dom("a", U1, memory=64))
    now = [path.stat().st_mtime_ns]
    scanner = Scanner(tmp_path, clock_ns=lambda: now[0])
    first = scanner.scan().domains[U1].parsed
    now[0] += RACY_NS
    second = scanner.scan()
    assert second.parsed == 1
    assert second.domains[U1].parsed is first


def test_system_mode_refuses_domain_files_root_does_not_own_alone(tmp_path: Path) -> None:
    """With --system a domain file picks binaries root runs: only root's, root-writable files count;
    a chmod (same mtime and size) is noticed, and a symlink to an unsafe target is refused too."""
    from reconciler.paths import untrusted_file

    good = tmp_path / "a.xml"
    good.write_bytes(dom("a", U1))
    good.chmod(0o644)
    scanner = Scanner(tmp_path, clock_ns=long_after, distrust=untrusted_file)
    assert U1 in scanner.scan().domains
    good.chmod(0o664)
    found = scanner.scan()
    assert U1 not in found.domains and "group-writable" in found.invalid[0].errors[0].message
    assert "chmod go-w" in found.invalid[0].errors[0].message
    good.chmod(0o644)
    os.chown(good, 1000, 0)
    found = scanner.scan()
    assert U1 not in found.domains and "uid 1000" in found.invalid[0].errors[0].message
    os.chown(good, 0, 0)
    assert U1 in scanner.scan().domains
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "b.img.xml").write_bytes(dom("b", U2))
    (target / "b.img.xml").chmod(0o666)
    (tmp_path / "b.xml").symlink_to(target / "b.img.xml")
    found = Scanner(tmp_path, clock_ns=long_after, distrust=untrusted_file).scan()
    assert U2 not in found.domains and U1 in found.domains
    assert any("world-writable" in i.errors[0].message for i in found.invalid)


def test_a_vanished_file_lingers_for_the_quiet_period_but_a_renamed_one_does_not(tmp_path: Path) -> None:
    """An unlink-and-rewrite (git checkout) is not seen for `linger` seconds; a rename is seen at
    once (the same inode under another name: no spurious clash with itself)."""
    now = [100.0]
    (tmp_path / "a.xml").write_bytes(dom("a", U1))
    scanner = Scanner(tmp_path, clock_ns=long_after, linger=0.25, now=lambda: now[0])
    assert U1 in scanner.scan().domains
    (tmp_path / "a.xml").unlink()
    gap = scanner.scan()
    assert U1 in gap.domains and gap.wake_at == 100.25 and not gap.expired
    now[0] += 0.3
    gone = scanner.scan()
    assert U1 not in gone.domains and gone.expired == {str(tmp_path / "a.xml")}
    (tmp_path / "a.xml").write_bytes(dom("a", U1))
    assert U1 in scanner.scan().domains
    os.rename(tmp_path / "a.xml", tmp_path / "b.xml")
    moved = scanner.scan()
    assert not moved.conflicts and moved.domains[U1].path == tmp_path / "b.xml"
