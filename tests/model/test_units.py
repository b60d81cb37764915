"""Memory sizes: every libvirt unit normalised to bytes, and QEMU's whole-MiB rounding."""

from __future__ import annotations

import pytest

import model
from model import units

UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"


def domain(memory: str, current: str = "<!-- no currentMemory -->") -> bytes:
    """A minimal valid domain whose <memory> is on line 4 and <currentMemory> on line 5."""
    return (
        "<domain type='kvm'>\n"
        "  <name>units</name>\n"
        f"  <uuid>{UUID}</uuid>\n"
        f"  {memory}\n"
        f"  {current}\n"
        "  <os><type arch='x86_64'>hvm</type></os>\n"
        "</domain>\n"
    ).encode()


def m_value(argv: list[str]) -> str:
    """The value of `-m` in an argv."""
    return argv[argv.index("-m") + 1]


# Every unit libvirt documents for <memory>, with 3 of it in bytes and as QEMU's `-m` (MiB, up).
EVERY_UNIT = [
    ("b", 3, 1),
    ("bytes", 3, 1),
    ("KB", 3_000, 1),
    ("k", 3_072, 1),
    ("KiB", 3_072, 1),
    ("MB", 3_000_000, 3),
    ("M", 3_145_728, 3),
    ("MiB", 3_145_728, 3),
    ("GB", 3_000_000_000, 2_862),
    ("G", 3_221_225_472, 3_072),
    ("GiB", 3_221_225_472, 3_072),
    ("TB", 3_000_000_000_000, 2_861_023),
    ("T", 3_298_534_883_328, 3_145_728),
    ("TiB", 3_298_534_883_328, 3_145_728),
    ("PB", 3_000_000_000_000_000, 2_861_022_950),
    ("P", 3 * 1024**5, 3 * 1024**3),
    ("PiB", 3 * 1024**5, 3 * 1024**3),
]
EXA = [("EB", 1000**6), ("E", 1024**6), ("EiB", 1024**6)]
"""The exa units: known, but any non-zero size in them is above the 16 PiB limit."""


@pytest.mark.parametrize(("unit", "size", "mib"), EVERY_UNIT)
def test_to_bytes_knows_every_libvirt_unit(unit: str, size: int, mib: int) -> None:
    assert units.to_bytes("3", unit) == size
    assert units.to_mib(size) == mib


def test_the_unit_table_is_exactly_libvirts() -> None:
    assert set(units.UNITS) == {u for u, _, _ in EVERY_UNIT} | {u for u, _ in EXA}


@pytest.mark.parametrize(("unit", "factor"), EXA)
def test_exa_units_are_known_and_capped(unit: str, factor: int) -> None:
    assert units.factor(unit) == factor
    assert units.to_bytes("0", unit) == 0
    with pytest.raises(ValueError, match="larger than 16 PiB"):
        units.to_bytes("1", unit)


# libvirt's virScaleInteger compares suffixes case-insensitively and also takes "byte"
# (checked with libvirt 9.0's `virsh domxml-to-native`: 'mb', 'Gib', 'Kb', 'byte', '' all work).
ANY_CASE = [
    ("mb", 1000**2), ("Mb", 1000**2), ("mB", 1000**2), ("Gib", 1024**3), ("GIB", 1024**3),
    ("KIB", 1024), ("kib", 1024), ("K", 1024), ("kb", 1000), ("Kb", 1000), ("m", 1024**2),
    ("g", 1024**3), ("t", 1024**4), ("tb", 1000**4), ("p", 1024**5), ("pib", 1024**5),
    ("pb", 1000**5), ("e", 1024**6), ("eib", 1024**6), ("eb", 1000**6),
    ("B", 1), ("byte", 1), ("Byte", 1), ("BYTES", 1), ("", 1024), (None, 1024),
]


@pytest.mark.parametrize(("unit", "factor"), ANY_CASE)
def test_units_are_read_case_insensitively_like_libvirt(unit: str | None, factor: int) -> None:
    assert units.factor(unit) == factor
    if 2 * factor <= units.MAX_BYTES:
        assert units.to_bytes("2", unit) == 2 * factor
    else:
        with pytest.raises(ValueError, match="larger than 16 PiB"):
            units.to_bytes("2", unit)


@pytest.mark.parametrize(("unit", "size"), [("mb", 5_000_000), ("Gib", 5 * 1024**3),
                                            ("KIB", 5 * 1024), ("byte", 5), ("PiB", 5 * 1024**5),
                                            ("P", 5 * 1024**5), ("", 5 * 1024)])
def test_issue_units_parse_in_a_domain(unit: str, size: int) -> None:
    assert model.parse(domain(f"<memory unit='{unit}'>5</memory>")).domain.memory == size


@pytest.mark.parametrize(("unit", "size", "mib"), EVERY_UNIT)
def test_memory_in_every_unit_is_stored_in_bytes_and_rendered_in_mib(unit: str, size: int,
                                                                    mib: int) -> None:
    domain_ = model.parse(domain(f"<memory unit='{unit}'>3</memory>")).domain
    assert domain_.memory == size
    assert m_value(model.command_line(domain_)) == str(mib)


@pytest.mark.parametrize(("unit", "size", "mib"), EVERY_UNIT)
def test_current_memory_in_every_unit_is_stored_in_bytes(unit: str, size: int, mib: int) -> None:
    parsed = model.parse(domain("<memory unit='PiB'>4</memory>",
                                f"<currentMemory unit='{unit}'>3</currentMemory>"
                                "<devices><memballoon model='virtio'/></devices>"))
    assert parsed.domain.current_memory == size
    assert parsed.domain.memory == 4 * 1024**5
    # -m is the maximum (<memory>), never the balloon target
    assert m_value(model.command_line(parsed.domain)) == str(4 * 1024**3)


@pytest.mark.parametrize(("xml", "size", "mib"), [
    ("<memory unit='KiB'>219100</memory>", 219_100 * 1024, "214"),  # the issue's example
    ("<memory>219100</memory>", 219_100 * 1024, "214"),  # no unit means KiB
    ("<memory unit='KiB'>1048576</memory>", 1024**3, "1024"),
    ("<memory unit='KiB'>1048577</memory>", 1024**3 + 1024, "1025"),
    ("<memory unit='b'>1</memory>", 1, "1"),
    ("<memory unit='MiB'>1</memory>", 1024**2, "1"),
    ("<memory unit='bytes'>1048577</memory>", 1024**2 + 1, "2"),
    ("<memory unit='MB'>1</memory>", 1_000_000, "1"),
    ("<memory unit='KB'>1048577</memory>", 1_048_577_000, "1001"),
    ("<memory unit='GiB'> 2 </memory>", 2 * 1024**3, "2048"),
    ("<memory unit='KiB' dumpCore='off'>2048</memory>", 2 * 1024**2, "2"),
])
def test_qemu_gets_whole_mib_rounded_up(xml: str, size: int, mib: str) -> None:
    domain_ = model.parse(domain(xml)).domain
    assert domain_.memory == size
    assert m_value(model.command_line(domain_)) == mib


@pytest.mark.parametrize(("value", "unit", "size"), [
    ("5", None, 5 * 1024),  # libvirt's default unit is KiB
    (" 7 ", "b", 7),
    ("0", "GiB", 0),
    ("16", "TiB", 16 * 1024**4),
    (str(16 * 1024**2), "GiB", 16 * 1024**5),  # exactly the 16 PiB limit
])
def test_to_bytes_values(value: str, unit: str | None, size: int) -> None:
    assert units.to_bytes(value, unit) == size


@pytest.mark.parametrize(("value", "unit", "message"), [
    ("1.5", "GiB", "'1.5' is not a whole number"),
    ("-1", "KiB", "'-1' is not a whole number"),
    ("", "KiB", "'' is not a whole number"),
    ("1e3", "KiB", "'1e3' is not a whole number"),
    ("0x10", "KiB", "'0x10' is not a whole number"),
    ("\u0663", "KiB", "is not a whole number"),  # ARABIC-INDIC DIGIT THREE: isdigit() but not ASCII
    ("1", "xb", "unit 'xb' is unknown; use one of b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, "
     "TB, T, TiB, PB, P, PiB, EB, E, EiB (any case), or byte"),
    ("1", "ki", "unit 'ki' is unknown"),
    ("1", "bytess", "unit 'bytess' is unknown"),
    ("1", "kibi", "unit 'kibi' is unknown"),
    ("1", " KiB", "unit ' KiB' is unknown"),
    ("1", "ZiB", "unit 'ZiB' is unknown"),
    (str(16 * 1024**2 + 1), "GiB", "16777217 GiB is larger than 16 PiB"),
    ("16385", "TiB", "16385 TiB is larger than 16 PiB"),
])
def test_to_bytes_rejects(value: str, unit: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        units.to_bytes(value, unit)
    assert message in str(info.value)


@pytest.mark.parametrize(("size", "mib"), [
    (0, 0),
    (1, 1),
    (1024**2 - 1, 1),
    (1024**2, 1),
    (1024**2 + 1, 2),
    (219_100 * 1024, 214),
    (16 * 1024**5, 16 * 1024**3),
])
def test_to_mib_rounds_up(size: int, mib: int) -> None:
    assert units.to_mib(size) == mib


@pytest.mark.parametrize(("size", "rendered"), [
    (2 * 1024**4, ("2", "TiB")),
    (3 * 1024**3, ("3", "GiB")),
    (1536 * 1024**2, ("1536", "MiB")),
    (219_100 * 1024, ("219100", "KiB")),
    (1_000_000, ("1000000", "b")),
    (1, ("1", "b")),
])
def test_render_uses_the_largest_exact_binary_unit(size: int, rendered: tuple[str, str]) -> None:
    assert units.render(size) == rendered
    assert units.to_bytes(*rendered) == size


@pytest.mark.parametrize(("memory", "current", "line", "message"), [
    ("<memory unit='KB '>1</memory>", "", 4, "<memory>: unit 'KB ' is unknown"),
    ("<memory unit='kibi'>1</memory>", "", 4, "<memory>: unit 'kibi' is unknown"),
    ("<memory unit='GiB'>1.5</memory>", "", 4, "<memory>: '1.5' is not a whole number"),
    ("<memory unit='GiB'></memory>", "", 4, "<memory>: '' is not a whole number"),
    ("<memory unit='GiB'>0</memory>", "", 4, "<memory>: 0 is too small; the minimum is 1"),
    ("<memory unit='TiB'>16385</memory>", "", 4, "<memory>: 16385 TiB is larger than 16 PiB"),
    ("<memory unit='MiB'>64</memory>", "<currentMemory unit='MiB'>-5</currentMemory>", 5,
     "<currentMemory>: '-5' is not a whole number"),
    ("<memory unit='MiB'>64</memory>", "<currentMemory unit='MiB'>65</currentMemory>", 5,
     "<currentMemory> is larger than <memory>"),
    ("<memory unit='MiB'>64</memory>", "<currentMemory unit='XiB'>1</currentMemory>", 5,
     "<currentMemory>: unit 'XiB' is unknown"),
])
def test_bad_sizes_are_reported_at_their_line(memory: str, current: str, line: int,
                                              message: str) -> None:
    with pytest.raises(model.InvalidDomainError) as info:
        model.parse(domain(memory, current or "<!-- -->"))
    assert [(i.line, i.message[:len(message)]) for i in info.value.issues] == [(line, message)]


def test_current_memory_equal_to_memory_is_fine() -> None:
    parsed = model.parse(domain("<memory unit='MiB'>64</memory>",
                                "<currentMemory unit='KiB'>65536</currentMemory>"))
    assert parsed.domain.current_memory == parsed.domain.memory == 64 * 1024**2
