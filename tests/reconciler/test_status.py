"""Status files: atomic writes, change-only rewrites, clean-up, clash losers, and the schema."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler import status as status_mod
from reconciler.status import (
    DomainStatus,
    FileError,
    StatusFile,
    StatusWriter,
    iso,
    read_status,
    schema,
    write_atomic,
)

try:
    import jsonschema
except ImportError:  # not a dependency; a small validator below covers what the schema uses
    jsonschema = None

T0 = 1_700_000_000.0
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"


def st(name: str, at: float = T0, **kw: Any) -> DomainStatus:
    kw.setdefault("uuid", U1 if name == "a" else U2)
    kw.setdefault("file", f"/cfg/{name}.xml")
    kw.setdefault("state", "running")
    kw.setdefault("desired", "running")
    return DomainStatus(name=name, updated_at=iso(at) or "", **kw)


def ident(path: Path) -> tuple[int, int]:
    s = path.stat()
    return s.st_ino, s.st_mtime_ns


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ write_atomic


def test_write_atomic_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    small = json.dumps({"n": 0}).encode()
    write_atomic(path, small)
    stop = threading.Event()
    reads: list[int] = []
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                problems.append("the file was missing during a rewrite")
                continue
            try:
                reads.append(json.loads(data)["n"])
            except (ValueError, KeyError) as exc:
                problems.append(f"partial or broken content ({len(data)} bytes): {exc}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 201):
            # alternate a large and a small payload so a non-atomic write would be visible
            padding = "x" * (200_000 if n % 2 else 3)
            write_atomic(path, json.dumps({"n": n, "pad": padding}).encode())
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert problems == []
    assert reads, "the reader never got to read"
    assert reads == sorted(reads), "a reader saw an older version after a newer one"
    assert json.loads(path.read_bytes())["n"] == 200
    assert listing(tmp_path) == ["status.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_write_atomic_mode_is_0600_whatever_the_umask_or_old_mode(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"old")
    path.chmod(0o644)
    old = os.umask(umask)
    try:
        write_atomic(path, b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"{}"
    assert listing(tmp_path) == ["x.json"]


def test_write_atomic_honours_an_explicit_mode(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_atomic(path, b"{}", mode=0o640)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_write_atomic_replaces_the_inode(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_atomic(path, b"1")
    with open(path, "rb") as held:  # a reader that opened the old version keeps reading it whole
        before = path.stat().st_ino
        write_atomic(path, b"22")
        assert path.stat().st_ino != before
        assert held.read() == b"1"
    assert path.read_bytes() == b"22"


def test_write_atomic_failure_leaves_the_old_file_and_no_temp(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.json"
    write_atomic(path, b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(status_mod.os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert listing(tmp_path) == ["x.json"]


# ------------------------------------------------------------------ StatusWriter.publish


def test_publish_writes_one_file_per_domain_and_status_json(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    a, b = st("a", state="running", pid=42), st("b", T0 + 1, state="stopped", desired="stopped")
    out = writer.publish([b, a], T0 + 2)
    assert out == [a, b]  # sorted by name
    assert listing(tmp_path) == ["a.json", "b.json", "status.json"]
    assert DomainStatus.model_validate_json((tmp_path / "a.json").read_bytes()) == a
    assert DomainStatus.model_validate_json((tmp_path / "b.json").read_bytes()) == b
    summary = read_status(tmp_path)
    assert summary is not None
    assert summary.domains == (a, b)
    assert summary.updated_at == iso(T0 + 2)  # as of the publish that changed it
    for name in listing(tmp_path):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert (tmp_path / name).read_bytes().endswith(b"}\n")


def test_a_domain_named_status_is_listed_in_status_json_and_never_overwrites_it(
        tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    named_status, other = st("status", pid=7), st("b", T0 + 1)
    writer.publish([named_status, other], T0 + 2)
    assert listing(tmp_path) == ["b.json", "status.json"]
    summary = read_status(tmp_path)
    assert summary is not None
    assert summary.domains == (other, named_status)


def test_publish_keeps_unchanged_domains_and_files(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    writer.publish([st("a"), st("b")], T0)
    before = {n: ident(tmp_path / n) for n in ("a.json", "b.json", "status.json")}
    contents = {n: (tmp_path / n).read_bytes() for n in before}
    # the next passes compute fresh statuses (new stamps) with the same content
    for i in range(1, 4):
        out = writer.publish([st("a", T0 + i), st("b", T0 + i)], T0 + i)
        assert [d.updated_at for d in out] == [iso(T0), iso(T0)]
        assert {n: ident(tmp_path / n) for n in before} == before
        assert {n: (tmp_path / n).read_bytes() for n in before} == contents


def test_publish_rewrites_only_what_changed(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    writer.publish([st("a"), st("b")], T0)
    a_before, b_before, s_before = (ident(tmp_path / n) for n in ("a.json", "b.json", "status.json"))
    out = writer.publish([st("a", T0 + 10), st("b", T0 + 10, state="crashed", reason="boom")], T0 + 10)
    assert [d.updated_at for d in out] == [iso(T0), iso(T0 + 10)]
    assert ident(tmp_path / "a.json") == a_before
    assert ident(tmp_path / "b.json") != b_before
    assert ident(tmp_path / "status.json") != s_before
    b = DomainStatus.model_validate_json((tmp_path / "b.json").read_bytes())
    assert (b.state, b.reason, b.updated_at) == ("crashed", "boom", iso(T0 + 10))
    summary = read_status(tmp_path)
    assert summary is not None
    assert summary.updated_at == iso(T0 + 10)
    assert [d.updated_at for d in summary.domains] == [iso(T0), iso(T0 + 10)]


def test_publish_removes_files_of_domains_that_are_gone(tmp_path: Path) -> None:
    (tmp_path / "leftover.json").write_text("{}")  # from an earlier run
    (tmp_path / "notes.txt").write_text("not ours")
    writer = StatusWriter(tmp_path)
    writer.publish([st("a"), st("b")], T0)
    assert listing(tmp_path) == ["a.json", "b.json", "notes.txt", "status.json"]
    writer.publish([st("a", T0 + 5)], T0 + 5)
    assert listing(tmp_path) == ["a.json", "notes.txt", "status.json"]
    summary = read_status(tmp_path)
    assert summary is not None
    assert [d.name for d in summary.domains] == ["a"]
    # it comes back: written again although its old bytes were once written
    writer.publish([st("a", T0 + 6), st("b", T0)], T0 + 6)
    assert DomainStatus.model_validate_json((tmp_path / "b.json").read_bytes()) == st("b", T0)


def test_status_json_updated_at_never_goes_back(tmp_path: Path) -> None:
    """Removing a domain changes status.json, so its stamp moves forward (to `now`)."""
    writer = StatusWriter(tmp_path)
    writer.publish([st("a", T0), st("b", T0 + 50)], T0 + 50)
    writer.publish([st("a", T0 + 100)], T0 + 100)
    summary = read_status(tmp_path)
    assert summary is not None
    assert [d.name for d in summary.domains] == ["a"]
    assert summary.updated_at == iso(T0 + 100)


def test_an_empty_status_is_not_rewritten_on_every_pass(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    writer.publish([], T0)
    before = ident(tmp_path / "status.json")
    assert read_status(tmp_path) == StatusFile(updated_at=iso(T0) or "", domains=())
    writer.publish([], T0 + 1)
    writer.publish([], T0 + 2)
    assert ident(tmp_path / "status.json") == before
    assert read_status(tmp_path) == StatusFile(updated_at=iso(T0) or "", domains=())


def _loser(name: str, file: str, winner: str, at: float = T0) -> DomainStatus:
    msg = f"name '{name}' is also used by {winner}, which wins"
    return DomainStatus(name=name, uuid=U2, file=file, state="conflict", reason=msg,
                        errors=(FileError(file=file, message=msg),), updated_at=iso(at) or "")


@pytest.mark.parametrize("loser_file", ["/cfg/aaa.xml", "/cfg/zzz.xml"])
@pytest.mark.parametrize("winner_state", ["running", "stopped", "crashed"])
def test_a_name_clash_loser_never_overwrites_the_winner(tmp_path: Path, loser_file: str,
                                                        winner_state: str) -> None:
    writer = StatusWriter(tmp_path)
    winner = st("web", file="/cfg/web.xml", state=winner_state, uuid=U1)
    loser = _loser("web", loser_file, "/cfg/web.xml")
    out = writer.publish([loser, winner], T0)
    assert out == [winner, loser]
    assert listing(tmp_path) == ["status.json", "web.json"]
    assert DomainStatus.model_validate_json((tmp_path / "web.json").read_bytes()) == winner
    summary = read_status(tmp_path)
    assert summary is not None
    assert summary.domains == (winner, loser)
    # and on the next pass nothing is rewritten
    before = (ident(tmp_path / "web.json"), ident(tmp_path / "status.json"))
    writer.publish([_loser("web", loser_file, "/cfg/web.xml", T0 + 1),
                    st("web", T0 + 1, file="/cfg/web.xml", state=winner_state, uuid=U1)], T0 + 1)
    assert (ident(tmp_path / "web.json"), ident(tmp_path / "status.json")) == before


@pytest.mark.parametrize("invalid_file", ["/cfg/web.xml", "/cfg/aaa/web.xml"])
def test_an_invalid_file_named_like_a_valid_domain_does_not_take_its_file(tmp_path: Path,
                                                                          invalid_file: str) -> None:
    """An invalid file's name is only its file stem; the domain really named so owns `<name>.json`."""
    writer = StatusWriter(tmp_path)
    valid = st("web", file="/cfg/other.xml", uuid=U1)
    invalid = DomainStatus(name="web", file=invalid_file, state="invalid", reason="invalid",
                           errors=(FileError(file=invalid_file, line=1, message="bad"),),
                           updated_at=iso(T0) or "")
    for order in ([invalid, valid], [valid, invalid]):
        out = StatusWriter(tmp_path).publish(order, T0)
        assert out == [valid, invalid]
        assert DomainStatus.model_validate_json((tmp_path / "web.json").read_bytes()) == valid
    writer.publish([valid, invalid], T0)
    writer.publish([invalid], T0 + 1)  # the valid one went away: now the invalid file speaks
    assert DomainStatus.model_validate_json((tmp_path / "web.json").read_bytes()) == invalid


def test_a_loser_with_its_own_name_gets_its_own_file(tmp_path: Path) -> None:
    """A uuid-clash loser under a name nobody else has: its file explains the conflict."""
    writer = StatusWriter(tmp_path)
    winner = st("a", file="/cfg/a.xml", uuid=U1)
    loser = DomainStatus(name="copy", uuid=U1, file="/cfg/copy.xml", state="conflict",
                         reason="same uuid", updated_at=iso(T0) or "")
    writer.publish([winner, loser], T0)
    assert listing(tmp_path) == ["a.json", "copy.json", "status.json"]
    assert DomainStatus.model_validate_json((tmp_path / "copy.json").read_bytes()) == loser


def test_no_temp_files_are_left_by_publish(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    for i in range(20):
        writer.publish([st("a", T0 + i, pid=i), st("b", T0 + i)], T0 + i)
    assert listing(tmp_path) == ["a.json", "b.json", "status.json"]


# ------------------------------------------------------------------ the schema


def _check(instance: Any, sch: dict[str, Any], root: dict[str, Any], where: str = "$") -> None:
    """A tiny JSON Schema validator for the keywords Pydantic emits for these models."""
    if "$ref" in sch:
        ref = sch["$ref"]
        assert ref.startswith("#/$defs/"), ref
        _check(instance, root["$defs"][ref.removeprefix("#/$defs/")], root, where)
        return
    if "anyOf" in sch:
        errors = []
        for option in sch["anyOf"]:
            try:
                _check(instance, option, root, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: matches no anyOf option: {errors}")
    kinds = {"string": str, "integer": int, "boolean": bool, "null": type(None), "object": dict,
             "array": list, "number": (int, float)}
    if "type" in sch:
        expected = kinds[sch["type"]]
        assert isinstance(instance, expected), f"{where}: {instance!r} is not {sch['type']}"  # type: ignore[arg-type]
        if sch["type"] == "integer":
            assert not isinstance(instance, bool), where
    if "enum" in sch:
        assert instance in sch["enum"], f"{where}: {instance!r} not in {sch['enum']}"
    if "const" in sch:
        assert instance == sch["const"], where
    if isinstance(instance, dict):
        props = sch.get("properties", {})
        for req in sch.get("required", []):
            assert req in instance, f"{where}: missing {req}"
        if sch.get("additionalProperties") is False:
            extra = set(instance) - set(props)
            assert not extra, f"{where}: unexpected {extra}"
        for key, value in instance.items():
            if key in props:
                _check(value, props[key], root, f"{where}.{key}")
    if isinstance(instance, list):
        for i, item in enumerate(instance):
            if "prefixItems" in sch and i < len(sch["prefixItems"]):
                _check(item, sch["prefixItems"][i], root, f"{where}[{i}]")
            elif isinstance(sch.get("items"), dict):
                _check(item, sch["items"], root, f"{where}[{i}]")


def validate(instance: Any, sch: dict[str, Any]) -> None:
    if jsonschema is not None:
        jsonschema.validate(instance, sch)
    _check(instance, sch, sch)


def _rich_statuses() -> list[DomainStatus]:
    return [
        st("a", pid=42, qmp="/run/qemud/a/qmp.sock", vnc="127.0.0.1:5900", console_log="/l/a.console",
           log="/l/a.log", started_at=iso(T0 - 60), restarts=2, pending_restart=True,
           errors=(FileError(file="/cfg/a.xml", line=3, message="bad"),)),
        st("b", state="crash-loop", reason="QEMU exited: crash", next_retry_at=iso(T0 + 8), restarts=5),
        DomainStatus(name="broken", file="/cfg/broken.xml", state="invalid", reason="invalid",
                     errors=(FileError(file="/cfg/broken.xml", line=None, message="empty"),),
                     updated_at=iso(T0) or ""),
        _loser("a", "/cfg/zz.xml", "/cfg/a.xml"),
    ]


def test_status_json_validates_against_the_schema(tmp_path: Path) -> None:
    sch = schema()
    json.dumps(sch)  # serialisable, as `reconcile status --schema` prints it
    assert sch["additionalProperties"] is False
    assert set(sch["required"]) >= {"updated_at"}
    writer = StatusWriter(tmp_path)
    writer.publish(_rich_statuses(), T0)
    data = json.loads((tmp_path / "status.json").read_bytes())
    validate(data, sch)
    assert len(data["domains"]) == 4
    assert StatusFile.model_validate(data).model_dump(mode="json") == data  # Pydantic round trip
    domain_schema = {"$defs": sch["$defs"], **sch["$defs"]["DomainStatus"]}
    for name in ("a.json", "b.json", "broken.json"):
        one = json.loads((tmp_path / name).read_bytes())
        validate(one, domain_schema)
        assert DomainStatus.model_validate(one).model_dump(mode="json") == one


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["domains"][0].update(state="exploded"),
        lambda d: d["domains"][0].update(surprise=1),
        lambda d: d["domains"][0].pop("name"),
        lambda d: d["domains"][0].update(pid="forty-two"),
        lambda d: d.pop("updated_at"),
        lambda d: d["domains"][0]["errors"][0].pop("message"),
    ],
    ids=["bad-state", "extra-key", "missing-name", "pid-as-string", "no-stamp", "error-without-message"],
)
def test_the_schema_rejects_what_pydantic_rejects(tmp_path: Path, mutate: Any) -> None:
    StatusWriter(tmp_path).publish(_rich_statuses(), T0)
    data = json.loads((tmp_path / "status.json").read_bytes())
    mutate(data)
    with pytest.raises(AssertionError):
        _check(data, schema(), schema())
    with pytest.raises(ValueError):
        StatusFile.model_validate(data)


def test_temp_files_of_a_killed_writer_are_removed_by_the_first_publish(tmp_path: Path) -> None:
    """A reconciler SIGKILLed between making a temporary file and renaming it leaves it behind:
    the next writer's first publish removes it (and only such files)."""
    left = [tmp_path / ".a.json.k2x9_q1.tmp", tmp_path / ".status.json.zz81.tmp"]
    for path in left:
        path.write_text("{\"half")
    (tmp_path / ".notes.tmp").write_text("not ours")
    (tmp_path / "keep.txt").write_text("not ours")
    StatusWriter(tmp_path).publish([st("a")], T0)
    assert listing(tmp_path) == [".notes.tmp", "a.json", "keep.txt", "status.json"]


def test_history_first_write_removes_temp_files_of_a_killed_writer(tmp_path: Path) -> None:
    """The same for `exits.json` in the run directory; other temp files there stay."""
    from reconciler.history import History

    (tmp_path / ".exits.json.abc.tmp").write_text("{")
    (tmp_path / ".settled.abc.tmp").write_text("1")
    assert History(tmp_path / "exits.json").write(b"{}") is None
    assert listing(tmp_path) == [".settled.abc.tmp", "exits.json"]


@pytest.mark.parametrize("damage", [b"\x00\xff", b"[1, 2]", b'{"not-a-uuid": 1}',
                                    b'{"11111111-1111-4111-8111-111111111111": {"kind": "nope"}}'])
def test_a_damaged_exits_json_is_rewritten_by_the_next_save(tmp_path: Path, damage: bytes) -> None:
    """A damaged `exits.json` (or entry) loads as what could be understood and is dirty, so the
    next save rewrites it as valid JSON; an intact one is not rewritten."""
    from reconciler.history import History

    path = tmp_path / "exits.json"
    path.write_bytes(damage)
    history = History.load(path)
    assert history.dirty and history.ended == {}
    assert history.save() is None
    assert isinstance(json.loads(path.read_bytes()), dict)
    assert not History.load(path).dirty  # rewritten: nothing damaged any more
    assert not History.load(tmp_path / "missing.json").dirty
