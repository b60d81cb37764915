"""Tables for the desired set (the one owner of what is wanted) and the planner's claims."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import model
from reconciler.desired import INVALID_KEPT, DesiredSet, DiskIdentity, Owned, writable_disks
from reconciler.plan import Blocked, Live, Observed, Start, Stop, plan
from reconciler.scan import Candidate, Conflict, FileIssue, FileKey, Invalid, Scan

U1 = uuidlib.UUID("11111111-1111-4111-8111-111111111111")
U2 = uuidlib.UUID("22222222-2222-4222-8222-222222222222")
KEY = FileKey(1, 1, 1)
NOW = 1000.0


def parsed(name: str, uuid: uuidlib.UUID, *, state: str = "running", disk: str | None = None,
           readonly: bool = False, shareable: bool = False,
           nvram: str | None = None) -> model.Parsed:
    devices = ""
    firmware = ("" if nvram is None else "<loader readonly='yes' type='pflash'>/fw/CODE.fd"
                f"</loader>\n<nvram>{nvram}</nvram>")
    if disk is not None:
        devices = (f"\n<disk type='file' device='disk'><driver name='qemu' type='raw' "
                   f"cache='none'/><source file='{disk}'/><target dev='vda' bus='virtio'/>"
                   f"{'<readonly/>' if readonly else ''}{'<shareable/>' if shareable else ''}"
                   "</disk>")
    text = (f"<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>"
            f"<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type>{firmware}</os>"
            f"<devices>{devices}</devices><metadata><qemud:desired xmlns:qemud='urn:qemud:1' "
            f"state='{state}'/></metadata></domain>")
    return model.parse(text.encode(), f"/c/{name}.xml")


def cand(name: str, uuid: uuidlib.UUID, path: str | None = None, **kw: object) -> Candidate:
    return Candidate(Path(path or f"/c/{name}.xml"), KEY, parsed(name, uuid, **kw))  # type: ignore[arg-type]


def scan(*cands: Candidate, conflicts: tuple[Conflict, ...] = (),
         invalid: tuple[Invalid, ...] = ()) -> Scan:
    return Scan({c.uuid: c for c in cands}, conflicts, invalid)


def owned(name: str, uuid: uuidlib.UUID, path: str | None = None, **kw: object) -> dict[uuidlib.UUID, Owned]:
    return {uuid: Owned(uuid, name, Path(path or f"/c/{name}.xml"),
                        parsed(name, uuid, **kw).domain)}  # type: ignore[arg-type]


def test_a_valid_winner_is_wanted_as_its_file_says() -> None:
    desired = DesiredSet(0.25).update(scan(cand("a", U1)), {}, NOW)
    assert list(desired.wants) == [U1] and desired.wants[U1].kept is None and not desired.gone


def test_an_invalid_file_keeps_the_definition_in_use_even_without_a_parse_cache() -> None:
    bad = Invalid(Path("/c/a.xml"), (FileIssue("/c/a.xml", 3, "<memory>: 'lots'"),))
    desired = DesiredSet(0.25).update(scan(invalid=(bad,)), owned("a", U1), NOW)
    want = desired.wants[U1]
    assert want.kept == INVALID_KEPT and want.running and want.errors == bad.errors
    assert not desired.gone


def test_a_running_clash_loser_keeps_its_definition() -> None:
    clash = Conflict(Path("/c/b.xml"), Path("/c/a.xml"), "name", "a", U2)
    desired = DesiredSet(0.25).update(scan(cand("a", U1), conflicts=(clash,)),
                                      owned("b", U2, "/c/b.xml"), NOW)
    assert desired.wants[U2].name == "b" and desired.wants[U2].kept is not None
    assert "name 'a' is also used by /c/a.xml, which wins" in desired.wants[U2].errors[0].message
    # the winner says so too
    assert "is also used by /c/b.xml, which stays stopped" in desired.wants[U1].errors[0].message
    assert not desired.gone


def test_a_file_that_now_defines_another_uuid_is_an_identity_change() -> None:
    desired = DesiredSet(0.25).update(scan(cand("b", U2, "/c/a.xml")), owned("a", U1), NOW)
    assert U1 not in desired.wants and "identity changed" in desired.gone[U1]
    assert U2 in desired.wants


def test_a_vanished_file_is_wanted_through_the_quiet_period_then_gone() -> None:
    ds = DesiredSet(0.25)
    first = ds.update(scan(), owned("a", U1), NOW)
    assert U1 in first.wants and first.wake_at == NOW + 0.25
    assert U1 in ds.update(scan(), owned("a", U1), NOW + 0.2).wants
    late = ds.update(scan(), owned("a", U1), NOW + 0.3)
    assert late.gone == {U1: "domain file removed"}


def test_a_writable_image_named_twice_blocks_the_second_and_both_report_it() -> None:
    a = cand("a", U1, disk="/img/x.img")
    b = cand("b", U2, disk="/img/x.img")
    desired = DesiredSet(0.25).update(scan(a, b), {}, NOW)
    assert desired.wants[U1].blocked is None and desired.wants[U2].blocked is not None
    assert "/c/b.xml:2" in desired.wants[U1].errors[0].message and desired.wants[U1].errors[0].line == 2
    assert "/c/a.xml:2" in desired.wants[U2].errors[0].message
    running_b = DesiredSet(0.25).update(scan(a, b), owned("b", U2, disk="/img/x.img"), NOW)
    assert running_b.wants[U1].blocked is not None and running_b.wants[U2].blocked is None


def test_a_uefi_variable_store_named_twice_is_a_disk_conflict() -> None:
    """QEMU writes <nvram> as a pflash drive and does not lock it against a second QEMU."""
    a = cand("a", U1, nvram="/vars/x_VARS.fd")
    b = cand("b", U2, nvram="/vars/x_VARS.fd")
    desired = DesiredSet(0.25).update(scan(a, b), {}, NOW)
    assert desired.wants[U1].blocked is None and desired.wants[U2].blocked is not None
    assert desired.wants[U2].errors[0].line == 2  # the <nvram> line
    assert "disk image /vars/x_VARS.fd is also used by 'a' (/c/a.xml:2)" in (
        desired.wants[U2].errors[0].message)
    image = DesiredSet(0.25).update(scan(a, cand("b", U2, disk="/vars/x_VARS.fd")), {}, NOW)
    assert image.wants[U2].blocked is not None  # nor may a disk be another VM's store
    running = Observed({U2: live("b", U2, "/c/b.xml", nvram="/vars/x_VARS.fd")})
    wants = DesiredSet(0.25).update(scan(a, b), owned("b", U2, nvram="/vars/x_VARS.fd"), NOW).wants
    assert [type(x) for x in plan(wants, running, NOW)] == [Blocked]  # b runs on it: a waits


def test_read_only_images_may_be_shared_and_a_stopped_domain_never_blocks_a_running_one() -> None:
    ro = DesiredSet(0.25).update(scan(cand("a", U1, disk="/i", readonly=True),
                                      cand("b", U2, disk="/i", readonly=True)), {}, NOW)
    assert not ro.disk_conflicts
    shared = DesiredSet(0.25).update(scan(cand("a", U1, disk="/i", shareable=True),
                                          cand("b", U2, disk="/i", shareable=True)), {}, NOW)
    assert not shared.disk_conflicts
    mixed = DesiredSet(0.25).update(scan(cand("a", U1, disk="/i", state="stopped"),
                                         cand("b", U2, disk="/i")), {}, NOW)
    assert mixed.wants[U2].blocked is None and mixed.wants[U1].blocked is None  # a stops
    assert mixed.wants[U1].errors and mixed.wants[U2].errors  # ... but both files hear of it
    both = DesiredSet(0.25).update(scan(cand("a", U1, disk="/i"), cand("b", U2, disk="/i")),
                                   {}, NOW)
    assert both.wants[U2].blocked is not None  # when both want to run, the second may not


def live(name: str, uuid: uuidlib.UUID, path: str, phase: str = "running", **kw: object) -> Live:
    return Live(uuid, name, 42, phase, parsed(name, uuid, **kw).domain, Path(path))  # type: ignore[arg-type]


def test_plan_stops_a_renamed_vm_and_queues_its_start() -> None:
    desired = DesiredSet(0.25).update(scan(cand("new", U1, "/c/a.xml")), {}, NOW)
    running = Observed({U1: live("old", U1, "/c/a.xml")})
    assert plan(desired.wants, running, NOW) == [Stop(U1, "old", "renamed to 'new'")]
    stopping = Observed({U1: live("old", U1, "/c/a.xml", phase="stopping")})
    assert plan(desired.wants, stopping, NOW) == [Start(U1, "new", "desired state is running")]


def test_plan_starts_a_new_identity_only_once_the_old_qemu_is_gone() -> None:
    stopping = Observed({U1: live("a", U1, "/c/a.xml", phase="stopping")})
    desired = DesiredSet(0.25).update(scan(cand("b", U2, "/c/a.xml")), {}, NOW)
    actions = plan(desired.wants, stopping, NOW)
    assert len(actions) == 1 and isinstance(actions[0], Blocked)
    assert "the file /c/a.xml" in actions[0].reason
    assert plan(desired.wants, Observed(), NOW) == [Start(U2, "b", "desired state is running")]


def test_plan_never_starts_a_second_qemu_on_a_live_vms_writable_image() -> None:
    holder = Observed({U1: live("a", U1, "/c/a.xml", phase="stopping", disk="/img/x")})
    desired = DesiredSet(0.25).update(scan(cand("b", U2, disk="/img/x")), {}, NOW)
    actions = plan(desired.wants, holder, NOW)
    assert [type(a) for a in actions] == [Blocked] and "/img/x" in actions[0].reason


def test_one_image_through_a_symlink_is_one_image(tmp_path: Path) -> None:
    image = tmp_path / "shared.img"
    image.write_bytes(b"")
    (tmp_path / "link.img").symlink_to(image)
    a = cand("a", U1, disk=str(image))
    b = cand("b", U2, disk=str(tmp_path / "link.img"))
    assert not DesiredSet(0.25).update(scan(a, b), {}, NOW).disk_conflicts  # spelling alone
    resolved = DesiredSet(0.25, DiskIdentity()).update(scan(a, b), {}, NOW)
    assert resolved.wants[U2].blocked is not None and str(image) in resolved.wants[U2].blocked


def test_one_image_through_a_hard_link_is_one_image(tmp_path: Path) -> None:
    image = tmp_path / "shared.img"
    image.write_bytes(b"")
    (tmp_path / "hard.img").hardlink_to(image)
    a = cand("a", U1, disk=str(image))
    b = cand("b", U2, disk=str(tmp_path / "hard.img"))
    resolved = DesiredSet(0.25, DiskIdentity()).update(scan(a, b), {}, NOW)
    assert resolved.wants[U2].blocked is not None and str(image) in resolved.wants[U2].blocked


def test_a_writable_floppy_is_an_image_only_one_vm_may_write() -> None:
    """Reviewed: two domains sharing a floppy image were both started; QEMU refused the second."""
    text = ("<domain type='qemu'><name>f</name><memory unit='MiB'>64</memory><os><type "
            "machine='pc'>hvm</type></os><devices><disk type='file' device='floppy'>"
            "<source file='/img/fl.img'/><target dev='fda' bus='fdc'/>{ro}</disk><disk "
            "type='file' device='cdrom'><source file='/img/cd.iso'/><target dev='hdc' "
            "bus='ide'/></disk></devices></domain>")
    floppy = model.parse(text.format(ro="").encode()).domain
    assert list(writable_disks(floppy)) == [(0, "/img/fl.img")]
    readonly = model.parse(text.format(ro="<readonly/>").encode()).domain
    assert list(writable_disks(readonly)) == []
