"""1,000 mutated and random XML files dropped into the watched directory (issue 9, fault suite).

Seeded: valid random domains (`tests.support.domains`, all wanted stopped so nothing boots) are
mutated in ways a disk, an editor or a person can damage a file: truncated, bytes flipped, a tag
or line deleted or duplicated, junk inserted, attribute values replaced, invalid UTF-8; some are
not XML at all and some stay valid. The daemon must keep serving, give every file a status (a
broken one with its error, naming the file), and leave the two running VMs alone.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

import model
from tests.faults.support import qemus_under, untouched
from tests.integration.test_loop import World, light_uuid, light_xml, world
from tests.support.domains import random_domain

__all__ = ["world"]  # the fixture, imported for the tests below

pytestmark = [pytest.mark.qemu]

COUNT = int(os.environ.get("QEMUD_FAULT_FILES", "1000"))
SEED = int(os.environ.get("QEMUD_SOAK_SEED", "9"))


def _stopped(rng: random.Random, index: int) -> bytes:
    """A valid random domain, wanted stopped, as XML."""
    domain = random_domain(rng, index)
    domain = domain.model_copy(update={"desired": domain.desired.model_copy(
        update={"state": "stopped"})})
    return model.to_xml(domain)


def _mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One damage of `data`: (what it was, the damaged bytes)."""
    kind = rng.choice(["truncate", "flip", "drop-tag", "dup-line", "junk", "attr", "utf8",
                       "swap-lines", "keep", "drop-line"])
    lines = data.split(b"\n")
    if kind == "truncate":
        end = data.rfind(b"</domain>")
        return kind, data[:rng.randrange(0, end)]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return kind, bytes(out)
    if kind == "drop-tag":
        tags = [m.span() for m in re.finditer(rb"<[^>]*>", data)]
        start, end = rng.choice(tags)
        return kind, data[:start] + data[end:]
    if kind in ("dup-line", "drop-line", "swap-lines"):
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        if kind == "dup-line":
            lines.insert(i, lines[j])
        elif kind == "drop-line":
            del lines[i]
        else:
            lines[i], lines[j] = lines[j], lines[i]
        return kind, b"\n".join(lines)
    if kind == "junk":
        at = rng.randrange(len(data))
        junk = rng.choice([b"<", b"&", b"]]>", b"<x>", b"\x00", b"<!DOCTYPE x>", b"</domain>",
                           b"<vcpu>0</vcpu>", b"<memory>-1</memory>", b"<name></name>"])
        return kind, data[:at] + junk + data[at:]
    if kind == "attr":
        spans = [m.span(2) for m in re.finditer(rb"=([\"'])(.*?)\1", data)]
        start, end = rng.choice(spans)
        value = rng.choice([b"", b"-1", b"99999999999999999999", b"x" * 300, b"\xe2\x82", b"&amp;"])
        return kind, data[:start] + value + data[end:]
    if kind == "utf8":
        at = rng.randrange(len(data))
        return kind, data[:at] + b"\xc3\x28\xff" + data[at:]
    return kind, data


def _random_file(rng: random.Random) -> tuple[str, bytes]:
    """Something that is no domain at all."""
    kind = rng.choice(["empty", "bytes", "text", "other-root", "comment"])
    if kind == "empty":
        return kind, b""
    if kind == "bytes":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
    if kind == "text":
        return kind, " ".join(rng.choice(["domain", "name", "<", ">", "vm"]) for _ in range(50)).encode()
    if kind == "other-root":
        return kind, b"<network><name>n</name></network>\n"
    return kind, b"<!-- nothing but a comment -->\n"


CERTAINLY_INVALID = {"truncate", "empty", "bytes", "text", "other-root", "comment", "utf8"}


def make_files(directory: Path, count: int, seed: int) -> dict[Path, str]:
    """Write `count` damaged or random files into `directory`; name -> how each was made."""
    rng = random.Random(seed)
    made: dict[Path, str] = {}
    for i in range(count):
        kind, data = _random_file(rng) if rng.random() < 0.15 else _mutate(rng, _stopped(rng, i))
        path = directory / f"f{i:04d}.xml"
        path.write_bytes(data)
        made[path] = kind
    return made


def test_a_thousand_damaged_files(world: World) -> None:
    """Dropped into the watched directory at once: the daemon serves on, every file has a
    status (the broken ones their error, naming the file), the running VMs keep their QEMUs."""
    daemon = world.start_daemon()
    for name in ("calm1", "calm2"):
        world.write(name, light_xml(name))
    pids = {n: world.wait_running(n)["pid"] for n in ("calm1", "calm2")}
    stage = world.root / "stage"
    stage.mkdir()
    made = make_files(stage, COUNT, SEED)
    for path in made:
        path.rename(world.config / path.name)
    files = {str(world.config / p.name): kind for p, kind in made.items()}

    def listed() -> dict[str, dict[str, object]] | None:
        by_file = {d["file"]: d for d in world.status_all()["domains"] if d["file"]}
        return by_file if set(files) <= set(by_file) else None

    by_file = world.wait(listed, f"a status for each of the {COUNT} files", timeout=120)
    assert daemon.proc.poll() is None, daemon.text()[-3000:]
    invalid = 0
    for path, kind in files.items():
        st = by_file[path]
        if kind in CERTAINLY_INVALID:
            assert st["state"] == "invalid", (kind, st)
        if st["state"] == "invalid":
            invalid += 1
            errors = st["errors"]
            assert isinstance(errors, list) and errors, (kind, st)
            first = errors[0]
            assert first["file"] == path and first["message"], (kind, st)
            if kind != "empty":  # every error names its line; an empty file has none
                assert isinstance(first["line"], int), (kind, st)
                assert f"{path}:{first['line']}: " in st["reason"], (kind, st)
        else:
            assert st["state"] in ("stopped", "conflict"), (kind, st)
    assert invalid > COUNT // 2, invalid
    for name, pid in pids.items():
        st = world.wait_running(name)
        assert (st["pid"], st["errors"]) == (pid, []) and untouched(pid), st
    assert sorted(q.pid for q in qemus_under(world.layout.run_dir)) == sorted(pids.values())

    for path in files:  # and all gone again
        os.unlink(path)
    world.wait(lambda: len(world.status_all()["domains"]) == 2, "only the two VMs listed")
    for name, pid in pids.items():
        assert world.wait_running(name)["pid"] == pid
    assert world.qemu(light_uuid("calm1")) == [pids["calm1"]]
    assert daemon.proc.poll() is None, daemon.text()[-3000:]
