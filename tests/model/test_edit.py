"""`set_state`: a byte-preserving change of `<qemud:desired state=...>` and of nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

import model
from model.edit import set_state

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.xml"))
HEAD = (b"<domain type='qemu'><name>a</name><memory unit='MiB'>64</memory>"
        b"<os><type arch='x86_64'>hvm</type></os>")
TAIL = b"</domain>"
NS = b"urn:qemud:1"

State = Literal["running", "stopped"]


def doc(inner: bytes) -> bytes:
    """A minimal valid domain with `inner` just before `</domain>`."""
    return HEAD + inner + TAIL


def changed(a: bytes, b: bytes) -> tuple[int, bytes, bytes]:
    """The one differing region of two byte strings: (offset, bytes in a, bytes in b)."""
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    j = 0
    while j < limit - i and a[len(a) - 1 - j] == b[len(b) - 1 - j]:
        j += 1
    return i, a[i:len(a) - j], b[i:len(b) - j]


def state_of(data: bytes) -> str:
    return model.parse(data).domain.desired.state


ODD = b"""<?xml version="1.0" encoding="utf-8"?>
<!-- a user's file: keep every byte; state='running' in a comment is just text -->
<domain   type="qemu" >
\t<name>odd</name>
  <memory unit="MiB" >64</memory>
  <os>   <type arch='x86_64'>hvm</type>\t</os>
  <metadata>
     <!-- first the state, then the namespace -->
     <qemud:desired
         state = "running"   restart="always"
       xmlns:qemud="urn:qemud:1"
       shutdown-timeout='7'  />
  </metadata>
</domain>
"""


# ------------------------------------------------------------------ flipping in place


def test_flip_changes_only_the_state_value_and_round_trips() -> None:
    assert state_of(ODD) == "running"
    stopped = set_state(ODD, "stopped")
    offset, old, new = changed(ODD, stopped)
    assert (old, new) == (b"running", b"stopped")
    assert offset == ODD.index(b'state = "running"') + len(b'state = "')
    assert len(stopped) == len(ODD)
    parsed = model.parse(stopped).domain
    assert parsed.desired.state == "stopped"
    assert parsed.desired.restart == "always"
    assert parsed.desired.shutdown_timeout == 7
    assert set_state(stopped, "running") == ODD


@pytest.mark.parametrize("quote", [b"'", b'"'])
@pytest.mark.parametrize(("start", "target"), [("running", "stopped"), ("stopped", "running")])
def test_flip_either_way_either_quote(quote: bytes, start: State, target: State) -> None:
    q = quote
    data = doc(b"<metadata><qemud:desired xmlns:qemud=" + q + NS + q + b" state=" + q
               + start.encode() + q + b"/></metadata>")
    out = set_state(data, target)
    offset, old, new = changed(data, out)
    assert (old, new) == (start.encode(), target.encode())
    assert data[offset - 1:offset] == q and out[offset + len(new):offset + len(new) + 1] == q
    assert state_of(out) == target


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_setting_the_current_state_returns_the_same_bytes(state: State) -> None:
    data = doc(b"<metadata>\n <qemud:desired xmlns:qemud='urn:qemud:1'  state='" + state.encode()
               + b"' /></metadata>")
    assert set_state(data, state) == data


def test_other_namespace_prefix() -> None:
    data = doc(b"<metadata><q:desired xmlns:q='urn:qemud:1' state='stopped'/></metadata>")
    out = set_state(data, "running")
    _, old, new = changed(data, out)
    assert (old, new) == (b"stopped", b"running")
    assert out == data.replace(b"state='stopped'", b"state='running'")
    assert state_of(out) == "running"


def test_default_namespace_without_prefix() -> None:
    data = doc(b"<metadata><desired xmlns='urn:qemud:1' state='running'/></metadata>")
    out = set_state(data, "stopped")
    assert out == data.replace(b"state='running'", b"state='stopped'")
    assert state_of(out) == "stopped"


def test_namespace_declared_on_metadata() -> None:
    data = doc(b"<metadata xmlns:qemud='urn:qemud:1'><qemud:desired state='running'/></metadata>")
    try:
        model.parse(data)
    except model.InvalidDomainError:
        pytest.skip("the parser does not accept attributes on <metadata>")
    out = set_state(data, "stopped")
    assert out == data.replace(b"state='running'", b"state='stopped'")


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("state", ["running", "stopped"])
def test_samples_change_only_the_desired_state(path: Path, state: State) -> None:
    data = path.read_bytes()
    before = model.parse(data).domain
    out = set_state(data, state, str(path))
    after = model.parse(out).domain
    assert after.desired.state == state
    expected = before.model_copy(update={"desired": before.desired.model_copy(update={"state": state})})
    assert after == expected
    if before.desired.state == state:
        assert out == data
    else:
        _, old, new = changed(data, out)
        assert (old, new) == (before.desired.state.encode(), state.encode())


# ------------------------------------------------------------------ adding state= or the element


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        (b"<qemud:desired xmlns:qemud='urn:qemud:1' restart='always'/>",
         b"<qemud:desired xmlns:qemud='urn:qemud:1' restart='always' state='running'/>"),
        (b"<qemud:desired xmlns:qemud='urn:qemud:1' restart='always' />",
         b"<qemud:desired xmlns:qemud='urn:qemud:1' restart='always' state='running'/>"),
        (b"<qemud:desired xmlns:qemud='urn:qemud:1' restart='always'></qemud:desired>",
         b"<qemud:desired xmlns:qemud='urn:qemud:1' restart='always' state='running'></qemud:desired>"),
        (b"<qemud:desired restart=\"always\"\n  xmlns:qemud=\"urn:qemud:1\"/>",
         b"<qemud:desired restart=\"always\"\n  xmlns:qemud=\"urn:qemud:1\" state='running'/>"),
    ],
    ids=["self-closing", "self-closing-space", "open-close", "multi-line"],
)
def test_adds_state_to_a_desired_element_lacking_it(element: bytes, expected: bytes) -> None:
    data = doc(b"<metadata>\n  " + element + b"\n</metadata>")
    assert state_of(data) == "stopped"  # the default
    out = set_state(data, "running")
    assert out == doc(b"<metadata>\n  " + expected + b"\n</metadata>")
    _, old, _ = changed(element, expected)
    assert old == b""  # only an insertion
    parsed = model.parse(out).domain
    assert parsed.desired.state == "running"
    assert parsed.desired.restart == "always"


def test_stopped_on_a_desired_element_lacking_state_is_already_true() -> None:
    data = doc(b"<metadata><qemud:desired xmlns:qemud='urn:qemud:1' restart='always'/></metadata>")
    assert set_state(data, "stopped") == data


def inserted_at(data: bytes, out: bytes, pos: int) -> bytes:
    """The bytes `out` has in addition to `data`, asserting they were inserted at `pos` only."""
    extra = len(out) - len(data)
    assert extra > 0
    assert out[:pos] == data[:pos] and out[pos + extra:] == data[pos:], "not a pure insertion at pos"
    return out[pos:pos + extra]


def _desired_parent(out: bytes) -> str:
    root = etree.fromstring(out)
    found = root.findall(".//{urn:qemud:1}desired")
    assert len(found) == 1
    parent = found[0].getparent()
    assert parent is not None
    grand = parent.getparent()
    assert grand is not None
    return f"{grand.tag}/{parent.tag}"


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_adds_the_element_inside_an_existing_metadata(state: State) -> None:
    data = doc(b"\n  <metadata>\n    <libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>"
               b"<libosinfo:os id='http://debian.org/debian/12'/></libosinfo:libosinfo>\n  </metadata>\n")
    out = set_state(data, state)
    new = inserted_at(data, out, data.index(b"<metadata>") + len(b"<metadata>"))
    assert b"desired" in new and state.encode() in new
    assert _desired_parent(out) == "domain/metadata"
    assert out.count(b"<metadata>") == 1
    assert state_of(out) == state
    assert b"libosinfo:os id='http://debian.org/debian/12'" in out


def test_fills_an_empty_metadata_element() -> None:
    data = doc(b"<metadata/>")
    out = set_state(data, "running")
    assert b"<metadata/>" not in out
    assert out.startswith(HEAD) and out.endswith(TAIL)
    assert _desired_parent(out) == "domain/metadata"
    assert state_of(out) == "running"


def test_adds_a_new_metadata_when_absent() -> None:
    data = doc(b"\n  <devices/>\n")
    out = set_state(data, "running")
    new = inserted_at(data, out, data.rindex(b"</domain>"))
    assert new.strip().startswith(b"<metadata>") and new.strip().endswith(b"</metadata>")
    assert _desired_parent(out) == "domain/metadata"
    assert state_of(out) == "running"


# ------------------------------------------------------------------ what must not be touched


def test_an_unrelated_desired_in_another_namespace_is_not_touched() -> None:
    foo = b"<foo:desired xmlns:foo='urn:other' state='running'/>"
    data = doc(b"<metadata>" + foo + b"<qemud:desired xmlns:qemud='urn:qemud:1' state='running'/>"
               b"</metadata>")
    out = set_state(data, "stopped")
    assert out.count(foo) == 1
    assert out == data.replace(b"qemud:1' state='running'", b"qemud:1' state='stopped'")
    assert state_of(out) == "stopped"


def test_an_unrelated_desired_alone_gets_a_sibling_not_an_edit() -> None:
    foo = b"<foo:desired xmlns:foo='urn:other' state='stopped'/>"
    data = doc(b"<metadata>" + foo + b"</metadata>")
    out = set_state(data, "running")
    new = inserted_at(data, out, data.index(b"<metadata>") + len(b"<metadata>"))
    assert foo in out and b"urn:qemud:1" in new
    assert state_of(out) == "running"
    root = etree.fromstring(out)
    assert root.find(".//{urn:other}desired").get("state") == "stopped"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "decoy",
    [
        b"<!-- <qemud:desired xmlns:qemud='urn:qemud:1' state='stopped'/> -->",
        b"<!-- <qemud:desired xmlns:qemud='urn:qemud:1' state='running'/> -->",
    ],
    ids=["comment-stopped", "comment-running"],
)
@pytest.mark.parametrize("target", ["running", "stopped"])
def test_a_commented_out_desired_element_is_left_alone(decoy: bytes, target: State) -> None:
    for start in ("running", "stopped"):
        data = doc(b"<metadata>\n  " + decoy + b"\n  <qemud:desired xmlns:qemud='urn:qemud:1' state='"
                   + start.encode() + b"'/>\n</metadata>")
        out = set_state(data, target)
        assert decoy in out
        assert state_of(out) == target
        if start == target:
            assert out == data
        else:
            _, old, new = changed(data, out)
            assert (old, new) == (start.encode(), target.encode())


def test_a_namespace_declaration_in_a_comment_does_not_count() -> None:
    data = doc(b"<!-- xmlns:foo='urn:qemud:1' --><metadata><foo:desired xmlns:foo='urn:other' "
               b"state='stopped'/></metadata>")
    out = set_state(data, "running")
    assert b"<foo:desired xmlns:foo='urn:other' state='stopped'/>" in out
    assert state_of(out) == "running"


def test_a_metadata_tag_in_a_comment_is_not_the_insertion_point() -> None:
    comment = b"<!-- <metadata> was here -->"
    data = doc(comment + b"<metadata><x:y xmlns:x='urn:x'/></metadata>")
    out = set_state(data, "running")
    inserted_at(data, out, data.rindex(b"<metadata>") + len(b"<metadata>"))
    assert comment in out
    assert state_of(out) == "running"


def test_a_closing_domain_tag_in_a_trailing_comment_is_not_the_insertion_point() -> None:
    data = doc(b"\n") + b"\n<!-- </domain> -->\n"
    out = set_state(data, "running")
    inserted_at(data, out, data.index(b"</domain>"))
    assert out.endswith(b"</domain>\n<!-- </domain> -->\n")
    assert state_of(out) == "running"


def test_a_desired_tag_inside_cdata_is_left_alone() -> None:
    cdata = (b"<description><![CDATA[<qemud:desired xmlns:qemud='urn:qemud:1' state='running'/>]]>"
             b"</description>")
    data = doc(cdata + b"<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='running'/></metadata>")
    out = set_state(data, "stopped")
    assert cdata in out
    assert state_of(out) == "stopped"


# ------------------------------------------------------------------ invalid input


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml at all",
        b"<domain type='qemu'><name>a</name>",
        doc(b"<metadata><qemud:desired xmlns:qemud='urn:qemud:1' state='bogus'/></metadata>"),
        b"<domain type='qemu'><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>",
        b"<domain type='qemu'><name>a</name><memory unit='MiB'>banana</memory></domain>",
    ],
    ids=["empty", "text", "truncated", "bogus-state", "no-name", "bad-memory"],
)
@pytest.mark.parametrize("state", ["running", "stopped"])
def test_invalid_input_raises(data: bytes, state: State) -> None:
    with pytest.raises(model.InvalidDomainError) as info:
        set_state(data, state, "/cfg/bad.xml")
    assert info.value.file == "/cfg/bad.xml"
    assert info.value.issues


# ------------------------------------------------------------------ property: any formatting


_ws = st.sampled_from([" ", "  ", "\n", "\t", "\n    ", " \t "])


@given(
    quote_state=st.sampled_from(["'", '"']),
    quote_ns=st.sampled_from(["'", '"']),
    prefix=st.sampled_from(["qemud", "q", "x-y", "a.b", "_p"]),
    ws1=_ws, ws2=_ws, ws3=_ws,
    eq_pad=st.sampled_from(["", " ", "\n"]),
    state_first=st.booleans(),
    start=st.sampled_from(["running", "stopped"]),
    target=st.sampled_from(["running", "stopped"]),
)
def test_any_formatting_only_the_value_changes(
    quote_state: str, quote_ns: str, prefix: str, ws1: str, ws2: str, ws3: str, eq_pad: str,
    state_first: bool, start: State, target: State,
) -> None:
    state_attr = f"state{eq_pad}={eq_pad}{quote_state}{start}{quote_state}"
    ns_attr = f"xmlns:{prefix}={quote_ns}urn:qemud:1{quote_ns}"
    attrs = [state_attr, ns_attr] if state_first else [ns_attr, state_attr]
    element = f"<{prefix}:desired{ws1}{attrs[0]}{ws2}{attrs[1]}{ws3}/>"
    data = doc(f"<!-- c -->\n<metadata>{ws1}{element}{ws2}</metadata>\n".encode())
    assert state_of(data) == start
    out = set_state(data, target)
    assert state_of(out) == target
    if start == target:
        assert out == data
    else:
        offset, old, new = changed(data, out)
        assert (old, new) == (start.encode(), target.encode())
        assert offset == data.index(f"{quote_state}{start}{quote_state}".encode()) + 1
