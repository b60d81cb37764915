"""The read-only commands of `reconcile`: `validate` and `argv`, their output and exit codes."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

import pytest

import model
from reconciler.cli import build_parser, command_word, main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"


def domain_xml(name: str = "t", *, uuid: str | None = UUID, devices: str = "",
               extra: str = "", acpi: bool = True) -> str:
    """A small valid domain (or an invalid one, through `extra`); `acpi=False` leaves out ACPI."""
    uuid_line = f"  <uuid>{uuid}</uuid>\n" if uuid is not None else "  <!-- no uuid -->\n"
    return (f"<domain type='kvm'>\n  <name>{name}</name>\n{uuid_line}"
            "  <memory unit='MiB'>64</memory>\n"
            "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
            f"{extra}"
            f"{'  <features><acpi/></features>' if acpi else '  <!-- no features -->'}\n"
            f"  <devices>{devices}</devices>\n"
            "</domain>\n")


def uuid_of(name: str) -> str:
    """A uuid of its own for each name (files given together must not share one)."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"qemud-test-cli/{name}"))


INVALID = domain_xml(extra="  <vcpu>0</vcpu>\n  <sound model='ich9'/>\n")
"""Two mistakes: <vcpu> on line 6, an unsupported <sound> on line 7."""


def run(*argv: str) -> tuple[int, str, str]:
    """Run `reconcile` in-process; return exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- validate: exit codes -----------------------------------------------------------------------


@pytest.mark.parametrize(("files", "code"), [
    ({"a.xml": domain_xml("a")}, 0),
    ({"a.xml": domain_xml("a"), "b.xml": domain_xml("b", uuid=uuid_of("b"))}, 0),
    ({"a.xml": INVALID}, 1),
    ({"a.xml": domain_xml("a"), "b.xml": INVALID}, 1),
    ({"a.xml": ""}, 1),
    ({"a.xml": "<domain"}, 1),
    ({"a.xml": domain_xml("a", uuid=None)}, 0),  # a warning is not an error
])
def test_validate_exit_code(tmp_path: Path, files: dict[str, str], code: int) -> None:
    paths = [str(write(tmp_path / name, text)) for name, text in files.items()]
    assert run("validate", *paths)[0] == code
    assert run("validate", "--json", *paths)[0] == code


@pytest.mark.parametrize("argv", [
    ["validate"],
    ["validate", "--json"],
    ["validate", "--bogus", "x.xml"],
    ["validate", "-x", "x.xml"],
    ["argv"],
    ["argv", "a.xml", "b.xml"],
    ["argv", "--bogus", "a.xml"],
    ["no-such-command"],
])
def test_usage_errors_exit_2_with_usage_on_stderr(argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""
    assert err.startswith("usage: reconcile")
    assert "error: " in err


def test_help_exits_0_on_stdout() -> None:
    code, out, err = run("validate", "--help")
    assert code == 0
    assert out.startswith("usage: reconcile validate")
    assert err == ""


def test_validate_missing_file_is_invalid(tmp_path: Path) -> None:
    missing = tmp_path / "missing.xml"
    code, out, err = run("validate", str(missing))
    assert code == 1
    assert out == ""
    assert err == (f"{missing}: error: cannot read the file: No such file or directory\n"
                   "1 of 1 file(s) invalid\n")


# --- validate: text output ----------------------------------------------------------------------


def test_validate_text_output(tmp_path: Path) -> None:
    good = write(tmp_path / "good.xml", domain_xml("good"))
    bad = write(tmp_path / "bad.xml", INVALID)
    code, out, err = run("validate", str(good), str(bad))
    assert code == 1
    assert out == f"{good}: valid (good, {UUID})\n"
    assert err.splitlines() == [
        f"{bad}:6: error: <vcpu>: '0' is too small; the minimum is 1",
        f"{bad}:7: error: <sound> inside <domain> is not supported by qemud; remove it or see "
        "README for what is",
        "1 of 2 file(s) invalid",
    ]


def test_validate_text_warnings_go_to_stderr(tmp_path: Path) -> None:
    path = write(tmp_path / "w.xml", domain_xml("w", uuid=None))
    derived = model.uuid_for_name("w")
    code, out, err = run("validate", str(path))
    assert code == 0
    assert out == f"{path}: valid (w, {derived})\n"
    assert err.startswith(f"{path}:1: warning: no <uuid>; using {derived}")
    assert err.count("\n") == 1


def test_validate_samples_directory() -> None:
    code, out, err = run("validate", str(SAMPLES))
    assert code == 0
    names = sorted(p.name for p in SAMPLES.glob("*.xml"))
    assert [line.split(": valid")[0] for line in out.splitlines()] == [
        str(SAMPLES / n) for n in names]
    assert "error" not in err


# --- validate: directories ----------------------------------------------------------------------


def test_directories_expand_to_their_xml_files_only(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "b.xml", domain_xml("b", uuid=uuid_of("b")))
    write(conf / "a.xml", domain_xml("a", uuid=uuid_of("a")))
    # everything below would be invalid if it were read
    for ignored in (".hidden.xml", "a.xml~", ".a.xml.swp", "a.xml.swp", "#a.xml#", "notes.txt",
                    "a.xml.tmp", "README"):
        write(conf / ignored, "not xml at all")
    (conf / "sub.xml").mkdir()
    write(conf / "sub.xml" / "c.xml", "not xml")
    code, out, _ = run("validate", "--json", str(conf))
    assert code == 0
    assert [r["file"] for r in json.loads(out)] == [str(conf / "a.xml"), str(conf / "b.xml")]


def test_files_and_directories_mix_in_command_line_order(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "z.xml", domain_xml("z", uuid=uuid_of("z")))
    write(conf / "y.xml", domain_xml("y", uuid=uuid_of("y")))
    single = write(tmp_path / "single.xml", domain_xml("s", uuid=uuid_of("s")))
    code, out, _ = run("validate", "--json", str(single), str(conf))
    assert code == 0
    assert [r["name"] for r in json.loads(out)] == ["s", "y", "z"]


def test_a_file_named_explicitly_is_read_even_if_a_directory_would_skip_it(tmp_path: Path) -> None:
    hidden = write(tmp_path / ".hidden.xml", domain_xml("h"))
    assert run("validate", str(hidden))[0] == 0


def test_an_empty_directory_is_valid_and_empty(tmp_path: Path) -> None:
    code, out, err = run("validate", "--json", str(tmp_path))
    assert (code, json.loads(out), err) == (0, [], "")


# --- validate --json ----------------------------------------------------------------------------


def test_validate_json_shape(tmp_path: Path) -> None:
    good = write(tmp_path / "a-good.xml", domain_xml("good"))
    warned = write(tmp_path / "b-warned.xml", domain_xml("warned", uuid=None))
    bad = write(tmp_path / "c-bad.xml", INVALID)
    code, out, err = run("validate", "--json", str(tmp_path))
    assert code == 1
    assert err == ""
    records = json.loads(out)
    assert records == [
        {"file": str(good), "valid": True, "name": "good", "uuid": UUID, "errors": [],
         "warnings": []},
        {"file": str(warned), "valid": True, "name": "warned",
         "uuid": str(model.uuid_for_name("warned")), "errors": [],
         "warnings": [{"line": 1, "message": records[1]["warnings"][0]["message"]}]},
        {"file": str(bad), "valid": False, "name": None, "uuid": None,
         "errors": [
             {"line": 6, "message": "<vcpu>: '0' is too small; the minimum is 1"},
             {"line": 7, "message": "<sound> inside <domain> is not supported by qemud; "
                                    "remove it or see README for what is"},
         ], "warnings": []},
    ]
    assert records[1]["warnings"][0]["message"].startswith("no <uuid>; using ")
    for rec in records:
        assert list(rec) == ["file", "valid", "name", "uuid", "errors", "warnings"]
        for issue in rec["errors"] + rec["warnings"]:
            assert list(issue) == ["line", "message"]


def test_validate_json_line_is_null_when_unknown(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.xml", "")
    code, out, _ = run("validate", "--json", str(empty))
    assert code == 1
    assert json.loads(out)[0]["errors"] == [
        {"line": None, "message": "file is empty; a domain file holds one <domain> element"}]


# --- argv ---------------------------------------------------------------------------------------

MINIMAL_ARGV = """\
qemu-system-x86_64 \\
-name guest=t,debug-threads=on \\
-uuid 4dea22b3-1d52-d8f3-2516-782e98ab3fa0 \\
-no-user-config \\
-nodefaults \\
-msg timestamp=on \\
-machine pc,acpi=off,dump-guest-core=off \\
-accel kvm \\
-m 64 \\
-smp 1,maxcpus=1 \\
-rtc base=utc \\
-action panic=shutdown \\
-display none
"""


def test_argv_prints_one_option_per_line_like_virsh_domxml_to_native(tmp_path: Path) -> None:
    path = write(tmp_path / "t.xml", domain_xml(acpi=False))
    code, out, err = run("argv", str(path))
    assert (code, err) == (0, "")
    assert out == MINIMAL_ARGV


def test_argv_starts_with_the_environment_like_libvirt(tmp_path: Path) -> None:
    path = write(tmp_path / "t.xml", domain_xml(extra=
        "<clock offset='timezone' timezone='&lt;+03>-3'/>"
        "<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<qemu:env name='A' value='b c'/></qemu:commandline>"))
    code, out, err = run("argv", str(path))
    assert code == 0 and "warning: <qemu:commandline>" in err
    lines = out.splitlines()
    assert lines[:3] == ["TZ='<+03>-3' \\", "A='b c' \\", "qemu-system-x86_64 \\"]
    assert "-rtc base=localtime \\" in lines
    # a shell runs it with that environment (the emulator swapped for a function printing it)
    script = 'f() { printf "%s|%s" "$TZ" "$A"; }\n' + out.replace("qemu-system-x86_64", "f", 1)
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert shell.stdout == "<+03>-3|b c"


def test_argv_quotes_for_the_shell(tmp_path: Path) -> None:
    path = write(tmp_path / "t.xml", domain_xml(
        name="my vm", devices="<disk><source file='/a,b c.img'/><target dev='vda'/></disk>"))
    code, out, _ = run("argv", str(path))
    assert code == 0
    lines = out.splitlines()
    assert "-name 'guest=my vm,debug-threads=on' \\" in lines
    assert "-drive 'file=/a,,b c.img,format=raw,if=none,id=drive-virtio-disk0' \\" in lines
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert not lines[-1].endswith("\\")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.xml")))
def test_argv_output_is_the_command_line_when_read_by_a_shell(sample: str) -> None:
    code, out, _ = run("argv", str(SAMPLES / sample))
    assert code == 0
    shell = subprocess.run(["bash", "-c", "set -- " + out + 'printf "%s\\0" "$@"'],
                           capture_output=True, check=True)
    words = shell.stdout.decode().split("\0")[:-1]
    assert words == model.command_line(model.parse_file(SAMPLES / sample).domain)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_argv_with_awkward_characters_survives_the_shell(tmp_path: Path) -> None:
    path = write(tmp_path / "t.xml", domain_xml(
        devices="<disk><source file=\"/it's $HOME; `x` &amp; \\n,b.img\"/>"
                "<target dev='vda'/></disk>"))
    code, out, _ = run("argv", str(path))
    assert code == 0
    shell = subprocess.run(["bash", "-c", "set -- " + out + 'printf "%s\\0" "$@"'],
                           capture_output=True, check=True)
    words = shell.stdout.decode().split("\0")[:-1]
    assert "file=/it's $HOME; `x` & \\n,,b.img,format=raw,if=none,id=drive-virtio-disk0" in words
    assert words == model.command_line(model.parse_file(path).domain)


def test_argv_json_is_an_array_of_strings(tmp_path: Path) -> None:
    path = write(tmp_path / "t.xml", domain_xml(
        devices="<disk><source file='/a,b c.img'/><target dev='vda'/></disk>"))
    code, out, err = run("argv", "--json", str(path))
    assert (code, err) == (0, "")
    argv = json.loads(out)
    assert isinstance(argv, list)
    assert all(isinstance(a, str) for a in argv)
    assert argv == model.command_line(model.parse_file(path).domain)
    assert "file=/a,,b c.img,format=raw,if=none,id=drive-virtio-disk0" in argv
    assert out.endswith("]\n")


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_argv_of_an_invalid_file_exits_1(tmp_path: Path, json_flag: list[str]) -> None:
    path = write(tmp_path / "bad.xml", INVALID)
    code, out, err = run("argv", *json_flag, str(path))
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"{path}:6: error: <vcpu>: '0' is too small; the minimum is 1",
        f"{path}:7: error: <sound> inside <domain> is not supported by qemud; remove it or see "
        "README for what is",
    ]


def test_argv_of_a_missing_file_exits_1(tmp_path: Path) -> None:
    code, out, err = run("argv", str(tmp_path / "nope.xml"))
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'nope.xml'}: error: cannot read the file: No such file or directory\n"


def test_argv_prints_warnings_on_stderr(tmp_path: Path) -> None:
    path = write(tmp_path / "w.xml", domain_xml("w", uuid=None))
    code, out, err = run("argv", "--json", str(path))
    assert code == 0
    assert json.loads(out)[json.loads(out).index("-uuid") + 1] == str(model.uuid_for_name("w"))
    assert err.startswith(f"{path}:1: warning: no <uuid>")


def test_argv_does_not_touch_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "w.xml", domain_xml("w", uuid=None))
    before = path.read_bytes(), path.stat().st_mtime_ns
    assert run("argv", str(path))[0] == 0
    assert run("validate", str(path))[0] == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


# --- python -m reconciler -----------------------------------------------------------------------


def test_python_dash_m_reconciler(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.xml", INVALID)
    ok = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(SAMPLES)],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(": valid (") == len(list(SAMPLES.glob("*.xml")))
    failed = subprocess.run([sys.executable, "-m", "reconciler", "validate", "--json", str(bad)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)[0]["valid"] is False
    usage = subprocess.run([sys.executable, "-m", "reconciler", "validate"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    assert "usage: reconcile validate" in usage.stderr


# --- the parser: only the subcommand that runs is built ----------------------------------------

@pytest.mark.parametrize(("argv", "word"), [
    (["status"], "status"),
    (["--config-dir", "status", "logs", "a"], "logs"),  # a directory named like a command
    (["--config-dir=/x", "--system", "status", "a"], "status"),
    (["--resync", "-5", "status"], "status"),
    (["--once"], None),
    ([], None),
    (["--help"], None),
    (["--conf", "/x", "status"], None),  # an abbreviation: left to argparse
    (["-x", "status"], None),
    (["nosuch", "status"], None),
    (["monitor", "vm", "status"], "monitor"),
])
def test_command_word(argv: list[str], word: str | None) -> None:
    assert command_word(argv) == word


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "a", "--json"], ["--config-dir", "/c", "status", "--schema"],
    ["status", "--config-dir", "/c"], ["--config-dir", "status", "logs", "a", "-n", "3"],
    ["logs", "a", "-f", "--console"], ["monitor", "a", "query-status", "--pretty"],
    ["stop", "--force", "a"], ["restart", "a", "--no-wait"], ["validate", "x", "y"],
    ["argv", "--json", "f.xml"], ["console", "a"], ["--resync", "5", "status"],
])
def test_building_only_the_subcommand_parses_alike(argv: list[str]) -> None:
    word = command_word(argv)
    assert word is not None
    assert vars(build_parser(only=word).parse_args(argv)) == vars(build_parser().parse_args(argv))
