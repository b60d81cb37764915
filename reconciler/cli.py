"""The `reconcile` command line: argument parsing and the commands users run day to day.

Exit codes follow one rule everywhere: 0 success, 1 something the user's files or VMs got wrong
(invalid, conflicting, failed, not running), 2 a usage or setup error. Two more come from the
terminal, as with any Unix command: 130 after Ctrl-C, 141 (128 + SIGPIPE) when whoever read our
output went away (`reconcile status | head -1`), which ends quietly, without a traceback.

The quick commands (`status`, `logs`, `monitor`, `--help`) import neither pydantic, asyncio, lxml
nor watchdog: everything heavy is imported inside the function that needs it, so they start in a
few tens of milliseconds. Keep it that way (tests/reconciler/test_cli_ops.py checks it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.paths import Layout

TYPE_CHECKING = False
"""True for type checkers only: at run time `typing` is not even imported (~3 ms saved)."""
if TYPE_CHECKING:
    from typing import Any, Literal, TextIO

    import model
    from reconciler.loop import PassResult
    from reconciler.plan import Action

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DEFAULT_RESYNC = 30.0
"""The daemon's full pass period (seconds); a status older than this with no daemon is stale."""

ACPI_WARNING = ("no <acpi/> in <features>: a graceful stop can never work; qemud will quit it "
                "at once (add <acpi/> to <features> to let the guest shut down cleanly)")


def _domain_files(directory: Path) -> list[Path]:
    """The domain files of a directory, sorted (the same choice as the reconciler's scan)."""
    from reconciler.scan import is_domain_file

    return sorted(p for p in directory.iterdir() if is_domain_file(p.name) and p.is_file())


def expand(paths: Sequence[str]) -> Iterator[Path]:
    """Yield the files named on the command line; a directory stands for its domain files, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _domain_files(path)
        else:
            yield path


def _issue_json(issue: model.Issue) -> dict[str, Any]:
    """An issue as the JSON object of `validate --json`."""
    return {"line": issue.line, "message": issue.message}


def _element_lines(path: Path) -> dict[str, int | None]:
    """Lines of the top-level `<domain>`, `<name>`, `<uuid>` and `<features>` of a valid file."""
    from model.xml import load

    root = load(path.read_bytes())
    lines: dict[str, int | None] = {"domain": root.line}
    for tag in ("name", "uuid", "features"):
        child = root.child(tag)
        lines[tag] = child.line if child is not None else None
    return lines


def _validate_one(path: Path, disks: dict[str, list[tuple[str, int | None, bool]]],
                  identify: Callable[[str], str] = os.path.realpath) -> dict[str, Any]:
    """Parse one file into the record `validate --json` prints for it.

    Besides the parser's warnings, a domain without ACPI is warned about: qemud cannot stop it
    gracefully. Each writable disk image of a valid file is added to `disks` (by the image it
    resolves to: path as written, line, whether the domain is wanted running).
    """
    import model
    from reconciler.desired import writable_disks
    from reconciler.hostfacts import parse_file_checked

    try:
        parsed = parse_file_checked(path)  # machine type and networks checked on this host
    except model.InvalidDomainError as exc:
        return {"file": str(path), "valid": False, "name": None, "uuid": None,
                "errors": [_issue_json(i) for i in exc.issues], "warnings": []}
    warnings = [_issue_json(w) for w in parsed.warnings]
    domain = parsed.domain
    if not domain.features.acpi:
        lines = _element_lines(path)
        warnings.append({"line": lines["features"] or lines["domain"], "message": ACPI_WARNING})
    running = domain.desired.state == "running"
    for index, image in writable_disks(domain, identify):
        line = parsed.disk_lines[index] if index < len(parsed.disk_lines) else None
        disks.setdefault(image, []).append((str(path), line, running))
    return {"file": str(path), "valid": True, "name": domain.name,
            "uuid": str(domain.uuid), "errors": [], "warnings": warnings}


def _mark_clashes(records: list[dict[str, Any]]) -> None:
    """Turn every name or uuid shared by two of the given files into an error on each of them.

    Each error names the line of the clashing element here and the other file and line, so
    both ends of a clash are shown. A file named twice on the command line is not a clash.
    """
    valid = [r for r in records if r["valid"]]
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    for rec in valid:
        real = os.path.realpath(rec["file"])
        if real not in seen:
            seen.add(real)
            unique.append(rec)
    lines: dict[str, dict[str, int | None]] = {}
    for kind in ("uuid", "name"):
        groups: dict[str, list[dict[str, Any]]] = {}
        for rec in unique:
            groups.setdefault(rec[kind], []).append(rec)
        for value, group in groups.items():
            if len(group) < 2:
                continue
            for rec in group:
                for other in group:
                    if other is rec:
                        continue
                    for r in (rec, other):
                        if r["file"] not in lines:
                            lines[r["file"]] = _element_lines(Path(r["file"]))
                    mine = lines[rec["file"]][kind] or lines[rec["file"]]["name"]
                    theirs = lines[other["file"]][kind] or lines[other["file"]]["name"]
                    what = f"name '{value}'" if kind == "name" else f"uuid {value}"
                    fix = ("give each domain its own <name>" if kind == "name" else
                           "give each domain its own <uuid> (or none: it is derived from the name)")
                    rec["errors"].append({"line": mine, "message": (
                        f"{what} is also used by {_where(other['file'], theirs)}; {fix}")})
    for rec in valid:
        if rec["errors"]:
            rec["valid"] = False


def _mark_disk_clashes(records: list[dict[str, Any]],
                       disks: dict[str, list[tuple[str, int | None, bool]]]) -> None:
    """Report every writable disk image that two of the given files name, at both ends.

    Two domains wanted running would fight over it (the reconciler keeps the second one
    stopped): an error on each. Otherwise only one may run at a time: a warning on each.
    """
    by_file: dict[str, dict[str, Any]] = {}
    for rec in records:
        by_file.setdefault(os.path.realpath(rec["file"]), rec)
    for image, named in disks.items():
        users = list({os.path.realpath(f): (f, line, run) for f, line, run in named}.values())
        if len(users) < 2:
            continue
        for file, line, running in users:
            rec = by_file[os.path.realpath(file)]
            for other, other_line, other_running in users:
                if other == file:
                    continue
                both = running and other_running
                what = f"disk image {image} is also written by {_where(other, other_line)}"
                if both:
                    rec["errors"].append({"line": line, "message": (
                        f"{what}, and both are wanted running: qemud runs only one of them; "
                        "give each domain its own image, or mark it <readonly/> or "
                        "<shareable/>")})
                    rec["valid"] = False
                else:
                    rec["warnings"].append({"line": line, "message": (
                        f"{what}: only one of them can run at a time")})


def _where(file: str, line: int | None) -> str:
    """`file:line` (or just `file` when the line is unknown)."""
    return f"{file}:{line}" if line is not None else file


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile validate`: check files and directories; exit 1 when any file is invalid.

    Files that are valid on their own but share a name or uuid with another file given are
    invalid too (the reconciler would run only one of them); so are two wanted running that
    write one disk image (two that are not both wanted running get a warning).
    """
    from reconciler.desired import DiskIdentity

    disks: dict[str, list[tuple[str, int | None, bool]]] = {}
    identify = DiskIdentity()  # hard links and symlinks of one image are one image
    records = [_validate_one(p, disks, identify) for p in expand(args.paths)]
    _mark_clashes(records)
    _mark_disk_clashes(records, disks)
    if args.json:
        json.dump(records, out, indent=2)
        out.write("\n")
    else:
        for rec in records:
            for issue in rec["warnings"]:
                err.write(f"{_where(rec['file'], issue['line'])}: warning: {issue['message']}\n")
            if rec["valid"]:
                out.write(f"{rec['file']}: valid ({rec['name']}, {rec['uuid']})\n")
            else:
                for issue in rec["errors"]:
                    err.write(f"{_where(rec['file'], issue['line'])}: error: {issue['message']}\n")
        bad = sum(1 for r in records if not r["valid"])
        if bad:
            err.write(f"{bad} of {len(records)} file(s) invalid\n")
    return EXIT_INVALID if any(not r["valid"] for r in records) else EXIT_OK


def format_argv(options: Sequence[tuple[str, ...]]) -> str:
    """Render a grouped command line one option per line, shell-quoted, joined by backslashes."""
    import shlex

    lines = [" ".join(shlex.quote(a) for a in option) for option in options]
    return " \\\n".join(lines) + "\n"


def cmd_argv(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile argv`: print the QEMU command line of one domain file."""
    import model
    from reconciler.hostfacts import parse_file_checked

    try:
        parsed = parse_file_checked(args.file)  # networks resolved as the daemon resolves them
    except model.InvalidDomainError as exc:
        for issue in exc.issues:
            err.write(f"{_where(str(args.file), issue.line)}: error: {issue.message}\n")
        return EXIT_INVALID
    for warning in parsed.warnings:
        err.write(f"{_where(str(args.file), warning.line)}: warning: {warning.message}\n")
    from reconciler import uefi
    firmware = uefi.descriptors() if model.uses_uefi(parsed.domain) else None
    if args.json:
        json.dump(model.command_line(parsed.domain, firmware=firmware), out)
        out.write("\n")
    else:
        import shlex  # QEMU's environment first, as assignments a shell reads (libvirt's too)
        out.write("".join(f"{k}={shlex.quote(v)} \\\n"
                          for k, v in model.environment(parsed.domain).items()))
        out.write(format_argv(model.options(parsed.domain, firmware=firmware)))
    return EXIT_OK


def layout_of(args: argparse.Namespace) -> Layout:
    """The directories to use: --system, --config-dir, or the session default ~/.qemud."""
    if getattr(args, "system", False):
        if os.geteuid() != 0:
            raise UsageError("--system needs root; run it as root or drop --system")
        return Layout.system()
    if getattr(args, "config_dir", None):
        return Layout.under(Path(args.config_dir).absolute())
    return Layout.session(Path.home())


class UsageError(Exception):
    """A command-line mistake: reported on stderr with exit code 2."""


def _describe(action: Action) -> str:
    """One line of `--dry-run` output for an action."""
    from reconciler.plan import Blocked, Clean, Start, Stop, Wait
    from reconciler.status import iso

    if isinstance(action, Start):
        return f"start {action.name} ({action.reason})"
    if isinstance(action, Stop):
        return f"stop {action.name} ({action.reason})"
    if isinstance(action, Wait):
        return f"wait {action.name} until {iso(action.until)} (restart back-off)"
    if isinstance(action, Blocked):
        return f"keep {action.name} stopped ({action.reason})"
    if isinstance(action, Clean):
        return f"clean stale runtime folder {action.uuid} ({action.reason})"
    return f"adopt the running QEMU of {action.uuid}"


# ---------------------------------------------------------------------------- the status table

PENDING_MARK = "*"
PENDING_NOTE = (f"{PENDING_MARK} restart pending: the domain file changed since QEMU started; "
                "the change applies once the VM is stopped and started again")


def _error_text(error: Mapping[str, Any]) -> str:
    """A status file error as `file:line: message` (the line left out when unknown)."""
    return f"{_where(str(error.get('file')), error.get('line'))}: {error.get('message')}"


def _reason_text(dom: Mapping[str, Any]) -> str:
    """The REASON column: the reconciler's reason, the first file error, the next retry.

    The first error is added as `file:line: message` unless the reason already quotes it, with
    how many more there are; a back-off shows when the next start is due.
    """
    reason = str(dom.get("reason") or "")
    errors = dom.get("errors") or []
    if not errors and not dom.get("next_retry_at"):
        return reason  # the usual case, and what a table of 1,000 domains is mostly made of
    first = _error_text(errors[0]) if errors else ""
    quoted = bool(errors) and str(errors[0].get("message")) in reason
    text = "; ".join(p for p in (reason, "" if quoted else first) if p)
    extras = []
    if len(errors) > 1:
        extras.append(f"(+{len(errors) - 1} more: reconcile status {dom.get('name')} --json)")
    if dom.get("next_retry_at"):
        extras.append(f"(next start at {dom['next_retry_at']})")
    return " ".join(p for p in (text, *extras) if p)


def format_table(domains: Sequence[Mapping[str, Any]]) -> str:
    """Render statuses (as status.json holds them) as an aligned table, like `virsh list --all`.

    A running VM whose file changed in a way that needs a restart is marked `*` in STATE, with
    a note under the table saying what that means.
    """
    rows = [("NAME", "STATE", "DESIRED", "PID", "RESTARTS", "REASON")]
    rows += [(str(dom.get("name")),
              f"{dom.get('state')}{PENDING_MARK if dom.get('pending_restart') else ''}",
              str(dom.get("desired")), str(dom.get("pid") or "-"), str(dom.get("restarts", 0)),
              _reason_text(dom)) for dom in domains]
    widths = [max(map(len, column)) for column in list(zip(*rows, strict=True))[:5]]
    line = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    lines = [line.format(*row).rstrip() for row in rows]
    if any(dom.get("pending_restart") for dom in domains):
        lines.append(PENDING_NOTE)
    return "\n".join(lines) + "\n"


def _as_json(statuses: Sequence[Any]) -> list[dict[str, Any]]:
    """Status models as the plain dicts status.json holds."""
    return [s.model_dump(mode="json") for s in statuses]


def _file_errors(domains: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every distinct file error of the statuses as `file:line: message`, sorted by file and line."""
    found: dict[tuple[str, int, str], str] = {}
    for dom in domains:
        for error in dom.get("errors") or []:
            key = (str(error.get("file")), error.get("line") or 0, str(error.get("message")))
            found.setdefault(key, _error_text(error))
    return [found[k] for k in sorted(found)]


def _dry_run_problems(layout: Layout) -> list[str]:
    """What `--dry-run` found wrong with the files: invalid files and clashes, one line each.

    A scan of its own (a dry run reports no statuses): `file:line: message` per error, and each
    writable disk image two domains wanted running name (the one `--once` would keep stopped).
    """
    import time

    from reconciler.desired import DesiredSet, DiskIdentity
    from reconciler.paths import untrusted_file
    from reconciler.scan import Scanner

    scan = Scanner(layout.config_dir,
                   distrust=untrusted_file if layout.system_instance else None).scan()
    lines = [f"{_where(i.file, i.line)}: {i.message}" for bad in scan.invalid for i in bad.errors]
    lines += [_where(str(c.loser), c.loser_line) + ": " + c.message() for c in scan.conflicts]
    desired = DesiredSet(0.0, DiskIdentity()).update(scan, {}, time.time())
    lines += [f"{_where(str(c.loser.file), c.loser_line)}: {c.message(c.loser)}"
              for c in desired.disk_conflicts if c.loser.running]
    return lines


def cmd_reconcile(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile` (daemon) and `reconcile --once [--dry-run]`.

    `--once` prints the status table and then every file error as `file:line: message`;
    `--dry-run` prints the plan, then the file errors, and exits 1 when a file is invalid or
    in conflict.
    """
    import asyncio

    from reconciler.daemon import under_journal
    from reconciler.loop import Reconciler, exit_code

    if args.dry_run and not args.once:
        raise UsageError("--dry-run goes with --once")
    layout = layout_of(args)
    rec = Reconciler(layout, out=err, say_file_errors=not args.once,  # --once prints them below
                     timestamps=not args.once and not under_journal(os.environ))
    if not args.once:
        asyncio.run(rec.serve(resync=args.resync))
        return EXIT_OK
    result: PassResult = asyncio.run(rec.once(dry_run=args.dry_run,
                                              lock_timeout=args.lock_timeout))
    if args.dry_run:
        for action in result.actions:
            out.write(_describe(action) + "\n")
        if not result.actions:
            out.write("nothing to do\n")
        problems = _dry_run_problems(layout)
        for line in problems:
            out.write(line + "\n")
        return EXIT_INVALID if problems else EXIT_OK
    domains = _as_json(sorted(result.statuses, key=lambda s: s.name))
    out.write(format_table(domains))
    for line in _file_errors(domains):
        out.write(line + "\n")
    import time

    unwritten = unwritten_warning(layout, time.time())
    if unwritten is not None:  # the table may be the daemon's old files: not "converged"
        err.write(unwritten)
        return EXIT_INVALID
    return exit_code(result)


# ---------------------------------------------------------------------------- reading status


def _schema_defaults() -> dict[str, dict[str, Any]]:
    """Field order and defaults of each object in status.json, from the shipped JSON Schema.

    Maps `StatusFile`, `DomainStatus`, `FileError` to {field: default} in declaration order
    (required fields map to None). Empty when the schema file cannot be read.
    """
    try:
        schema = json.loads(Path(__file__).with_name("status.schema.json").read_bytes())
    except (OSError, ValueError):
        return {}
    defs = dict(schema.get("$defs", {}))
    defs["StatusFile"] = schema
    return {name: {k: v.get("default") for k, v in d.get("properties", {}).items()}
            for name, d in defs.items()}


def _normalise(obj: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` with its fields in schema order, missing ones at their defaults, unknown ones kept.

    Status files written by a reconciler of another version read like this one's would.
    """
    if not fields or list(obj) == list(fields):
        return obj  # as written by this version (the usual case): nothing to do
    out = {k: obj.get(k, default) for k, default in fields.items()}
    out.update((k, v) for k, v in obj.items() if k not in out)
    return out


def read_status_json(status_dir: Path) -> dict[str, Any] | None:
    """status.json as plain JSON (no pydantic): {"updated_at", "domains": [...]}; None if absent.

    Each domain has every field of `DomainStatus` in its order, so `--json` prints what a
    model dump would. Raises `StatusReadError` when the file is not valid JSON.
    """
    found = _read_status(status_dir)
    return found[0] if found is not None else None


def _read_status(status_dir: Path) -> tuple[dict[str, Any], bytes | None] | None:
    """`read_status_json`, and the file's bytes when they are exactly what `--json` prints.

    They are when normalising changed nothing: the daemon writes status.json with the same
    `json.dumps(..., indent=2)` that `status --json` uses, so it can be copied as it is.
    """
    path = status_dir / "status.json"
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusReadError(path, exc.strerror or str(exc)) from exc
    except ValueError as exc:
        raise StatusReadError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("domains", []), list):
        raise StatusReadError(path, "not a status file (no list of domains)")
    fields = _schema_defaults()
    dom_fields, err_fields = fields.get("DomainStatus", {}), fields.get("FileError", {})
    same = list(data) == ["updated_at", "domains"]
    order = list(dom_fields)
    domains = []
    for i, raw_dom in enumerate(data.get("domains", [])):
        problem = _shape_problem(raw_dom)
        if problem is not None:  # valid JSON, wrong shape: said, never a traceback
            raise StatusReadError(path, f"not a status file (domain {i}: {problem})")
        dom = raw_dom if list(raw_dom) == order else _normalise(raw_dom, dom_fields)
        if err_fields and dom.get("errors") and isinstance(dom["errors"], list):
            errors = [_normalise(e, err_fields) for e in dom["errors"]]
            if any(a is not b for a, b in zip(errors, dom["errors"], strict=True)):
                dom = dict(dom, errors=errors)
        same = same and dom is raw_dom
        domains.append(dom)
    data = _normalise(data, fields.get("StatusFile", {}))
    data["domains"] = domains
    return data, (raw if same and raw.endswith(b"}\n") else None)


_SHAPE: dict[str, tuple[type, ...]] = {
    "name": (str,), "state": (str,), "desired": (str, type(None)), "pid": (int, type(None)),
    "restarts": (int, type(None)), "reason": (str, type(None)), "errors": (list, type(None)),
    "warnings": (list, type(None)), "file": (str, type(None))}
"""The types `status` relies on, for the fields a status entry has."""


def _shape_problem(entry: object) -> str | None:
    """What is wrong with one entry of status.json's domains for `status` to show, or None."""
    if not isinstance(entry, dict):
        return f"{type(entry).__name__} instead of an object"
    for key, types in _SHAPE.items():
        if key in entry and not isinstance(entry[key], types):
            return f"{key!r} is a {type(entry[key]).__name__}"
    for item in entry.get("errors") or ():
        if not isinstance(item, dict):
            return "an error that is not an object"
    return None


class StatusReadError(ReconcilerError):
    """status.json exists but cannot be read as a status file."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"cannot read {path}: {problem}; a reconciler rewrites it on its next "
                         "pass ('reconcile --once', or the daemon 'reconcile')")


def _age(stamp: str | None, now: float) -> float | None:
    """Seconds since an ISO 8601 timestamp of a status file (None if missing or unreadable)."""
    if not stamp:
        return None
    at = _epoch(stamp)
    if at is None:
        from datetime import datetime

        try:
            at = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            return None
    return now - at


def _epoch(stamp: str) -> float | None:
    """Unix time of a UTC stamp as `status.iso` writes it (`2026-12-03T06:41:34.123Z`), else None.

    Computed by hand: importing datetime would cost `reconcile status` ~1.5 ms.
    """
    if len(stamp) < 20 or stamp[-1] != "Z" or stamp[4] + stamp[7] + stamp[10] != "--T":
        return None
    try:
        year, month, day = int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10])
        hour, minute, second = int(stamp[11:13]), int(stamp[14:16]), float(stamp[17:-1])
    except ValueError:
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400.0 + hour * 3600 + minute * 60 + second


HUNG_AFTER = 90.0
"""A daemon that has not completed a pass for this long (or three resync periods) is hung."""


def unwritten_warning(layout: Layout, now: float) -> str | None:
    """The warning for status files a reconciler cannot write (see `STATUS_UNWRITTEN`), or None.

    A read-only or full status folder keeps the old table on disk; it must not pass for the
    truth. Reads one small file.
    """
    from reconciler.lock import STATUS_UNWRITTEN

    marker = layout.run_dir / STATUS_UNWRITTEN
    try:
        since = marker.stat().st_mtime
        reason = marker.read_text(errors="replace").strip() if since else ""
    except OSError:
        return None
    if not since:
        return None
    why = reason or "see the daemon's log for why"
    return (f"reconcile: warning: the status files could not be written for "
            f"{_ago(max(0.0, now - since))} ({why}): this table may be out of date; make "
            f"{layout.status_dir} writable (or free space); the VMs themselves are "
            "unaffected\n")


def _stale_warning(layout: Layout, updated_at: str | None, resync: float, now: float
                   ) -> str | None:
    """The warning for a status no reconciler keeps up to date, or None when it is current.

    Stale means: older than the resync period and no daemon serves the directory (an idle
    daemon does not rewrite an unchanged status, so age alone proves nothing while one runs);
    or a daemon holds the directory but has not completed a pass (its heartbeat, `LAST_PASS`)
    for three resync periods (at least `HUNG_AFTER` s): it is hung.
    """
    age = _age(updated_at, now)
    if age is None or age <= resync:
        return None
    from reconciler.lock import DAEMON_LOCK, LAST_PASS, DirLock

    lock = DirLock(layout.run_dir / DAEMON_LOCK)
    if lock.held():
        beat = layout.run_dir / LAST_PASS
        try:
            quiet = now - beat.stat().st_mtime
            with contextlib.suppress(ValueError):  # the daemon's own --resync, when it says
                resync = float(beat.read_text().strip() or resync)
        except OSError:
            return None  # a daemon of an older version, which keeps no heartbeat
        if quiet <= max(3 * resync, HUNG_AFTER):
            return None
        owner = lock.owner()
        who = f"the daemon (pid {owner})" if owner else "the daemon"
        return (f"reconcile: warning: {who} serving {layout.config_dir} has not completed a "
                f"pass for {_ago(quiet)} (it runs one at least every {resync:g} s): it may be "
                "hung; see its log, and restart it (systemctl restart, or kill it and run "
                "'reconcile'): its VMs keep running and are adopted\n")
    return (f"reconcile: warning: this status is from {updated_at} ({_ago(age)} ago) and no "
            f"reconciler has updated it since: none serves {layout.config_dir}; start the "
            f"daemon with '{layout.command()}' (or its systemd service), or refresh the status "
            f"once with '{layout.command()} --once'\n")


def _ago(seconds: float) -> str:
    """A rough human duration: 45 s, 12 min, 3 h, 2 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile status [NAME] [--json] [--schema]`: read the status files; no daemon needed.

    Reads status.json with the json module only. Warns on stderr when the status is stale
    (see `_stale_warning`); exit 1 when NAME is not there.
    """
    if args.schema:
        from reconciler.status import schema as status_schema

        json.dump(status_schema(), out, indent=2)
        out.write("\n")
        return EXIT_OK
    import time

    layout = layout_of(args)
    found = _read_status(layout.status_dir)
    current, raw = found if found is not None else (None, None)
    if current is None:
        err.write(f"reconcile: no status yet in {layout.status_dir}: run 'reconcile' (the daemon) "
                  "or 'reconcile --once' on this directory first\n")
    else:
        warning = _stale_warning(layout, current.get("updated_at"), args.resync, time.time())
        if warning is not None:
            err.write(warning)
    unwritten = unwritten_warning(layout, time.time())
    if unwritten is not None:
        err.write(unwritten)
    domains: list[dict[str, Any]] = list(current["domains"]) if current else []
    if args.name is not None:
        domains = [d for d in domains if d.get("name") == args.name]
        if not domains:
            err.write(f"reconcile: no domain named {args.name!r} in {layout.status_dir}\n")
            return EXIT_INVALID
    if args.json and args.name is None and raw is not None:
        out.write(raw.decode())  # byte for byte what the dump below would print, only faster
    elif args.json:
        json.dump(domains[0] if args.name is not None and len(domains) == 1 else
                  {"updated_at": current.get("updated_at") if current else None,
                   "domains": domains}, out, indent=2)
        out.write("\n")
    else:
        out.write(format_table(domains))
    return EXIT_OK


# ---------------------------------------------------------------------------- start / stop


def cmd_set_state(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile start|stop NAME`: set the desired state in the file, apply it if no daemon runs."""
    import asyncio
    import stat

    import model
    from model.edit import set_state
    from reconciler.lock import daemon_serves
    from reconciler.loop import Reconciler
    from reconciler.scan import Scanner
    from reconciler.status import write_atomic
    from reconciler.supervisor import QemuLayer

    if getattr(args, "no_wait", False) and not getattr(args, "force", False):
        raise UsageError("--no-wait goes with --force (a plain stop is applied by the daemon "
                         "without waiting anyway)")
    layout = layout_of(args)
    state: Literal["running", "stopped"] = "running" if args.command == "start" else "stopped"
    if getattr(args, "no_wait", False) and not daemon_serves(layout.run_dir):
        raise _no_daemon_to_wait_for(layout)  # before the file is touched: exit 2, no change
    layout.ensure()
    # the files running VMs were started from win their clashes, as in the daemon's own scan:
    # the file edited is the one the VM of that name runs from
    layer = QemuLayer(layout)
    running = {u: f for u in layer.runtime_folders() if (f := layer.load_source(u)) is not None}
    scan = Scanner(layout.config_dir).scan(running)
    found = [c for c in scan.domains.values() if c.name == args.name]
    if not found and getattr(args, "force", False):
        # its file is gone (or invalid): no desired state to edit, but a VM of that name may
        # still run (being stopped after its quiet period, or kept on its last definition)
        out.write(f"{args.name}: no valid domain file in {layout.config_dir}; asking for a "
                  "VM of that name to stop at once\n")
        return _power(layout, "stop-force", args.name, wait=not args.no_wait, out=out, err=err,
                      lock_timeout=args.lock_timeout)
    if not found:
        err.write(f"reconcile: no valid domain named {args.name!r} in {layout.config_dir}\n")
        for bad in scan.invalid:  # it may be one of these
            first = bad.errors[0] if bad.errors else None
            if first is not None:
                err.write(f"{_where(first.file, first.line)}: {first.message}\n")
        if scan.invalid and state == "stopped":
            err.write(f"if {args.name}'s file is among these invalid ones: its VM keeps running "
                      "on its last valid definition; fix the file (with state='stopped' to stop "
                      "the VM), or delete the file to stop the VM\n")
        return EXIT_INVALID
    path = found[0].path
    try:
        data = path.read_bytes()
        new = set_state(data, state, str(path))
    except model.InvalidDomainError as exc:
        for issue in exc.issues:
            err.write(f"{_where(str(path), issue.line)}: error: {issue.message}\n")
        return EXIT_INVALID
    try:
        write_atomic(path, new, stat.S_IMODE(path.stat().st_mode))
    except OSError as exc:  # a full disk, a read-only folder: the file is left as it was
        err.write(f"reconcile: cannot write {path}: {exc.strerror}; nothing changed (free "
                  "some space, or make the folder writable, and run it again)\n")
        return EXIT_INVALID
    out.write(f"{args.name}: desired state is now {state} ({path})\n")
    if getattr(args, "force", False):  # that VM, even if a clash loser takes the name next
        return _power(layout, "stop-force", args.name, wait=not args.no_wait, out=out, err=err,
                      lock_timeout=args.lock_timeout, uuid=str(found[0].uuid))
    if daemon_serves(layout.run_dir):
        out.write("the running daemon applies it\n")
        return EXIT_OK
    domain = found[0].parsed.domain
    if state == "stopped" and found[0].uuid in running and not domain.features.acpi:
        out.write(f"no daemon runs: stopping {args.name} here, at once (no <acpi/>: its guest "
                  "cannot see a power button)\n")
    elif state == "stopped" and found[0].uuid in running:
        timeout = domain.desired.shutdown_timeout
        out.write(f"no daemon runs: stopping {args.name} here: ACPI power button, then up to "
                  f"{timeout:g}s for the guest to power off (`reconcile stop {args.name} "
                  "--force` does not wait)\n")
    elif state == "running":
        out.write(f"no daemon runs: starting {args.name} here\n")
    out.flush()
    rec = Reconciler(layout, out=err)
    result = asyncio.run(rec.once())
    mine = [s for s in result.statuses if s.name == args.name and s.state != "conflict"]
    out.write(format_table(_as_json(mine)))
    return EXIT_OK if mine and mine[0].state == state else EXIT_INVALID


# ---------------------------------------------------------------------------- power verbs


def cmd_power(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile restart|reboot|reset NAME`: carried out by the daemon, or here when none runs."""
    return _power(layout_of(args), args.command, args.name, wait=not args.no_wait, out=out,
                  err=err, lock_timeout=args.lock_timeout)


def _power(layout: Layout, verb: str, name: str, *, wait: bool, out: TextIO, err: TextIO,
           lock_timeout: float = 120.0, uuid: str | None = None) -> int:
    """Ask the daemon (control socket) to carry out `verb`, printing its progress; else do it.

    Without a daemon the verb is carried out in this process (which owns the VMs meanwhile,
    like `reconcile --once`), so `--no-wait` cannot apply: it is refused (exit 2). `uuid`
    names the VM exactly (see `reconciler.control.request`).
    """
    from reconciler.control import CONTROL_SOCKET, NoDaemonError, request

    def progress(text: str) -> None:
        """One step, as it happens."""
        out.write(text + "\n")
        out.flush()

    try:
        ok, message = request(layout.run_dir / CONTROL_SOCKET, verb, name, wait=wait,
                              progress=progress, uuid=uuid)
    except NoDaemonError:
        ok, message = _power_here(layout, verb, name, wait=wait, progress=progress, err=err,
                                  lock_timeout=lock_timeout, uuid=uuid)
    (out if ok else err).write(("" if ok else "reconcile: ") + message + "\n")
    return EXIT_OK if ok else EXIT_INVALID


def _power_here(layout: Layout, verb: str, name: str, *, wait: bool,
                progress: Callable[[str], None], err: TextIO,
                lock_timeout: float = 120.0, uuid: str | None = None) -> tuple[bool, str]:
    """Carry out a power verb in this process (no daemon answers); (ok, final message)."""
    import asyncio
    import uuid as uuidlib
    from typing import cast

    from reconciler.lock import PASS_LOCK, DirLock, LockTimeoutError, daemon_serves
    from reconciler.loop import Reconciler
    from reconciler.power import PowerError, Verb, carry_out_here

    if daemon_serves(layout.run_dir):
        return False, (f"a daemon serves {layout.config_dir} but does not answer on its control "
                       "socket; restart it (an older daemon has none)")
    if not wait:  # a script that asked not to wait must not sit through a shutdown timeout
        raise _no_daemon_to_wait_for(layout)
    layout.ensure()
    if verb == "stop-force" and uuid is not None and DirLock(
            layout.run_dir / PASS_LOCK).held_elsewhere():
        return _force_through(layout, name, uuid, progress)
    rec = Reconciler(layout, out=err)
    try:
        return True, asyncio.run(carry_out_here(rec, cast(Verb, verb), name, progress,
                                                lock_timeout,
                                                uuid=uuidlib.UUID(uuid) if uuid else None))
    except (PowerError, LockTimeoutError) as exc:
        return False, str(exc)


def _no_daemon_to_wait_for(layout: Layout) -> UsageError:
    """The refusal of `--no-wait` when no daemon serves `layout` (it would wait here)."""
    return UsageError(f"--no-wait needs the daemon to carry it out, and none serves "
                      f"{layout.config_dir}: start it ('reconcile'), or run the command "
                      "without --no-wait (it is then carried out here, waiting)")


def _force_through(layout: Layout, name: str, uuid: str,
                   progress: Callable[[str], None], timeout: float = 30.0) -> tuple[bool, str]:
    """`stop --force` while another reconcile (a graceful `stop`, say) holds the pass lock.

    The file already says stopped, so that reconcile stops the VM too; forcing means not
    waiting for it: QEMU is told to `quit` through its users' monitor, and that reconcile sees
    an ordinary exit. Waits on QEMU's pidfd (at most `timeout` s); (ok, final message).
    """
    import select

    from reconciler.process import read_pidfile
    from reconciler.usermonitor import (
        MonitorUnavailableError,
        QmpCommandError,
        QmpProtocolError,
        execute,
        qemu_runs,
    )

    pidfile = layout.pidfile(uuid)
    pid = read_pidfile(pidfile)
    try:
        pidfd = os.pidfd_open(pid) if pid is not None else -1
    except OSError:
        pidfd = -1
    if pidfd < 0 or not qemu_runs(pidfile, uuid):  # checked once the pidfd pins the process
        if pidfd >= 0:
            os.close(pidfd)
        return True, f"{name}: not running"
    try:
        progress(f"another reconcile is busy on {layout.config_dir} (a graceful stop under "
                 f"way?); quitting {name}'s QEMU at once through its own monitor")
        try:
            execute(layout.user_qmp_socket(uuid), name, {"execute": "quit"}, timeout=10.0)
        except (MonitorUnavailableError, QmpCommandError, QmpProtocolError) as exc:
            if not select.select([pidfd], [], [], 0)[0]:
                return False, f"{name}: could not quit it: {exc}"
        if not select.select([pidfd], [], [], timeout)[0]:
            return False, f"{name}: QEMU was told to quit but still runs after {timeout:g}s"
        return True, f"{name}: stopped"
    finally:
        os.close(pidfd)


# ---------------------------------------------------------------------------- logs and console


def _byte_writer(out: TextIO) -> Callable[[bytes], None]:
    """Write raw bytes to `out`: through its binary buffer when it has one, else decoded."""
    import codecs

    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()

        def write_bytes(data: bytes) -> None:
            """Write and flush at once (a follower's reader wants every line as it comes)."""
            buffer.write(data)
            buffer.flush()

        return write_bytes
    decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write_text(data: bytes) -> None:
        """Decode (a character split between chunks is kept for the next one) and write."""
        out.write(decoder.decode(data))

    return write_text


def cmd_logs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile logs NAME [-f] [--console] [-n N]`: print (and follow) a VM's log.

    Exit 1 when the log does not exist (without `-f`, which waits for it); Ctrl-C ends `-f`
    with exit 0.
    """
    from reconciler.follow import follow, print_tail

    layout = layout_of(args)
    path = layout.console_log(args.name) if args.console else layout.log_file(args.name)
    if args.lines is not None and args.lines < 0:
        raise UsageError("--lines needs a number >= 0")
    write = _byte_writer(out)
    if not args.follow:
        try:
            print_tail(path, write, args.lines)
        except FileNotFoundError:
            what = "console log" if args.console else "log"
            err.write(f"reconcile: no {what} of {args.name!r} at {path}: qemud has not started "
                      "a VM of that name with this directory ('reconcile status' lists them)\n")
            return EXIT_INVALID
        return EXIT_OK

    def note(text: str) -> None:
        """A follower's remark (rotation, truncation), on stderr."""
        err.write(f"reconcile: {text}\n")
        err.flush()

    try:
        follow(path, write, note, lines=args.lines)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_console(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile console NAME`: attach the terminal to a running VM's serial console.

    Ctrl-] detaches (exit 0); exit 1 when the VM is not running, has no console to attach
    to, or its QEMU went away while attached.
    """
    from reconciler.console import ConsoleError, attach, find_console

    layout = layout_of(args)
    current = read_status_json(layout.status_dir)
    domains = current["domains"] if current else []
    try:
        endpoint = find_console(layout, args.name, domains)
    except ConsoleError as exc:
        err.write(f"reconcile: {exc}\n")
        return EXIT_INVALID
    out.flush()

    def banner() -> None:
        """Said once attached, the terminal raw already (so lines end in CR LF), like virsh."""
        err.write(f"Connected to domain '{args.name}' ({endpoint.describe()})\r\n"
                  "Escape character is ^] (Ctrl + ])\r\n")
        err.flush()

    try:
        how = attach(endpoint, sys.stdin.fileno(), _fileno(out), banner)
    except ConsoleError as exc:
        err.write(f"\nreconcile: {exc}\n")
        return EXIT_INVALID
    if how == "closed":
        err.write(f"\nreconcile: the console of {args.name!r} closed: its QEMU exited "
                  f"('reconcile status {args.name}' says why)\n")
        return EXIT_INVALID
    err.write("\n")
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile monitor NAME COMMAND`: one QMP command on the VM's users' monitor; its reply.

    Prints QEMU's reply object as JSON (`{"return": ...}`). Exit 1 with QEMU's error class and
    description when it refuses the command, or when the VM is not running; 2 when COMMAND is
    not a QMP command.
    """
    from reconciler.usermonitor import (
        MonitorUnavailableError,
        QmpCommandError,
        execute,
        find_socket,
        parse_command,
    )

    try:
        command = parse_command(args.qmp_command)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.timeout <= 0:
        raise UsageError("--timeout needs a number of seconds > 0")
    layout = layout_of(args)
    current = read_status_json(layout.status_dir)
    try:
        path = find_socket(layout, args.name, current["domains"] if current else [])
        reply = execute(path, args.name, command, timeout=args.timeout)
    except (MonitorUnavailableError, QmpCommandError) as exc:
        err.write(f"reconcile: {exc}\n")
        return EXIT_INVALID
    json.dump(reply, out, indent=2 if args.pretty else None)
    out.write("\n")
    return EXIT_OK


def _fileno(stream: TextIO) -> int:
    """The file descriptor behind a stream; the process's stdout for one without (tests)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.__stdout__.fileno() if sys.__stdout__ is not None else 1


# ---------------------------------------------------------------------------- the parser


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized without `shutil` (whose import costs ~2.5 ms).

    argparse makes one for every argument it adds, even when no help is printed.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    """The terminal's width as `shutil.get_terminal_size` gives it: $COLUMNS, stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and a one-line hint on usage errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        """Print the usage error and exit 2."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _where_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Add --config-dir and --system (on subcommands without defaults, so either place works)."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config-dir", metavar="DIR", default=default,
                       help="keep config, runtime, logs and status under DIR (default ~/.qemud)")
    group.add_argument("--system", action="store_true",
                       default=argparse.SUPPRESS if suppress else False,
                       help="the system instance: /etc/qemud, /run/qemud, /var/log/qemud (root)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of `reconcile` and its subcommands.

    With `only` (a subcommand's name), every subcommand is still named (and listed by
    `--help`), but only that one gets its own arguments: `main` builds just the one it runs,
    which saves the start-up of the quick commands a few milliseconds.
    """
    parser = _Parser(prog="reconcile", description="Declarative reconciler for QEMU virtual "
                     "machines described by libvirt domain XML files. Without a command, runs "
                     "the daemon (or one pass with --once).",
                     epilog="Exit status: 0 success, 1 a file invalid or in conflict, a VM "
                     "failed or not running, 2 a usage or setup error.")
    _where_options(parser, suppress=False)
    parser.add_argument("--once", action="store_true",
                        help="run one full pass, wait for it to settle, and exit "
                        "(0 converged, 1 something invalid, in conflict or failed, 2 setup)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --once: print the plan only (exit 1 when a file is invalid)")
    parser.add_argument("--resync", type=float, default=DEFAULT_RESYNC, metavar="SECONDS",
                        help="daemon: full pass at least this often (default 30); status: warn "
                        "when no daemon runs and the status is older")
    parser.add_argument("--lock-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="--once: how long to wait for another reconciler (default 120)")
    parser.set_defaults(func=cmd_reconcile)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, kwargs, arguments in _SUBCOMMANDS:
        cmd = sub.add_parser(name, help=kwargs["help"], description=kwargs.get("description"),
                             epilog=kwargs.get("epilog"))
        if only is None or only == name:
            arguments(cmd, name)
    return parser


def _validate_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`validate`'s arguments."""
    cmd.add_argument("--json", action="store_true", help="print one JSON array, an object a file")
    cmd.add_argument("paths", nargs="+", metavar="PATH", help="domain files or directories")
    cmd.set_defaults(func=cmd_validate)


def _argv_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`argv`'s arguments."""
    cmd.add_argument("--json", action="store_true", help="print a JSON array of strings")
    cmd.add_argument("file", type=Path, metavar="FILE")
    cmd.set_defaults(func=cmd_argv)


def _status_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`status`'s arguments."""
    _where_options(cmd, suppress=True)
    cmd.add_argument("name", nargs="?", metavar="NAME")
    cmd.add_argument("--json", action="store_true", help="print the status JSON")
    cmd.add_argument("--schema", action="store_true", help="print the JSON Schema of status.json")
    cmd.set_defaults(func=cmd_status)


def _state_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`start`'s and `stop`'s arguments."""
    _where_options(cmd, suppress=True)
    cmd.add_argument("name", metavar="NAME")
    cmd.set_defaults(func=cmd_set_state)
    if name == "stop":
        cmd.add_argument("--force", action="store_true", help="do not wait for the guest "
                         "to power off (ACPI): QMP quit at once, then signals")
        cmd.add_argument("--no-wait", action="store_true",
                         help="with --force: return once the daemon has the request")


def _power_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """The arguments of the power verbs `restart`, `reboot`, `reset`."""
    _where_options(cmd, suppress=True)
    cmd.add_argument("name", metavar="NAME")
    cmd.add_argument("--no-wait", action="store_true",
                     help="return once the daemon has the request (scripts)")
    cmd.set_defaults(func=cmd_power)


def _logs_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`logs`'s arguments."""
    _where_options(cmd, suppress=True)
    cmd.add_argument("name", metavar="NAME")
    cmd.add_argument("-f", "--follow", action="store_true",
                     help="keep printing what is appended, like tail -f, until Ctrl-C")
    cmd.add_argument("--console", action="store_true", help="the serial console log instead")
    cmd.add_argument("-n", "--lines", type=int, metavar="N",
                     help="only the last N lines (default: all)")
    cmd.set_defaults(func=cmd_logs)


def _console_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`console`'s arguments."""
    _where_options(cmd, suppress=True)
    cmd.add_argument("name", metavar="NAME")
    cmd.set_defaults(func=cmd_console)


def _import_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`import`'s arguments (the command lives in reconciler/importer.py, loaded when used)."""
    cmd.add_argument("--from", dest="source", metavar="DIR", default=None,
                     help="libvirt's config folder (default /etc/libvirt/qemu)")
    cmd.add_argument("--uri", default=None, help="ask `virsh -c URI dumpxml` instead")
    cmd.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile import`: see `reconciler.importer.cmd_import`."""
    from reconciler.importer import cmd_import as run

    return run(args, out, err, layout_of(args))


def _monitor_arguments(cmd: argparse.ArgumentParser, name: str) -> None:
    """`monitor`'s arguments."""
    _where_options(cmd, suppress=True)
    cmd.add_argument("name", metavar="NAME")
    cmd.add_argument("qmp_command", metavar="COMMAND",
                     help="""a QMP command as JSON, '{"execute": "NAME", "arguments": """
                     """{...}}', or just its name (query-status)""")
    cmd.add_argument("--pretty", action="store_true", help="indent the JSON reply")
    cmd.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                     help="how long to wait for QEMU (default 10)")
    cmd.set_defaults(func=cmd_monitor)


_SUBCOMMANDS: tuple[tuple[str, dict[str, str], Callable[[argparse.ArgumentParser, str], None]],
                    ...] = (
    ("validate", {"help": "check domain files (exit 1 when any is invalid, or two share a name, "
                  "a uuid, or a disk image both wanted running)"}, _validate_arguments),
    ("argv", {"help": "print the QEMU command line of a domain file"}, _argv_arguments),
    ("status", {"help": "show domain states from the status files"}, _status_arguments),
    ("start", {"help": "set a domain's desired state to running (applied now when no daemon "
               "runs)"}, _state_arguments),
    ("stop", {"help": "set a domain's desired state to stopped (applied now when no daemon "
              "runs)"}, _state_arguments),
    ("restart", {"help": "stop a running VM (gracefully) and start it again from its current "
                 "definition (applies a pending restart); starts it if it is wanted but not "
                 "running"}, _power_arguments),
    ("reboot", {"help": "press the ACPI power button and start the VM afresh once the guest "
                "has powered off (its desired state is unchanged)"}, _power_arguments),
    ("reset", {"help": "hard-reset a running VM (same QEMU, like pressing the reset button)"},
     _power_arguments),
    ("logs", {"help": "print a VM's log (QEMU's messages and qemud's lifecycle lines) or, with "
              "--console, its serial console log"}, _logs_arguments),
    ("console", {"help": "attach to a running VM's serial console (Ctrl-] detaches)",
                 "description": "Attach this terminal to serial port 0 of a running VM (a pty "
                 "or a unix socket in bind mode). Ctrl-] detaches; the VM keeps running and the "
                 "console log keeps recording."}, _console_arguments),
    ("monitor", {"help": "send one QMP command to a running VM and print QEMU's reply (JSON)",
                 "description": "Send one QMP command through the VM's own users' monitor "
                 "(qmp-user.sock in its runtime folder; qmp-shell and scripts may use that "
                 "socket too) and print QEMU's reply. The daemon keeps its own monitor: nothing "
                 "here disturbs it.",
                 "epilog": """Example: reconcile monitor web '{"execute": "query-status"}'. """
                 "Exit status: 0 the reply, 1 QEMU refused the command (its error class and "
                 "description on stderr) or the VM is not running, 2 a usage error."},
     _monitor_arguments),
    ("import", {"help": "write qemud files for libvirt's existing domains (autostart ones "
                "wanted running), never overwriting a file"}, _import_arguments),
)
"""Every subcommand: its name, what `add_parser` gets, and what adds its own arguments."""

_OPTIONS_WITH_VALUES = frozenset({"--config-dir", "--resync", "--lock-timeout"})
_FLAGS = frozenset({"--once", "--dry-run", "--system"})


def command_word(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` runs, when that is certain without parsing; None otherwise.

    Certain: every word before it is one of the main options, spelt in full. Anything else
    (an abbreviation, `--help`, an unknown option, no subcommand) gives None: the whole parser
    is built then, and argparse judges as always.
    """
    names = {name for name, _, _ in _SUBCOMMANDS}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _FLAGS or (word.partition("=")[0] in _OPTIONS_WITH_VALUES and "=" in word):
            continue
        elif word in _OPTIONS_WITH_VALUES:
            skip = True
        else:
            return word if word in names else None
    return None


def _quiet_stdout(stream: TextIO) -> None:
    """After a broken pipe: point the stream's descriptor at /dev/null so nothing is reported.

    Python flushes stdout at exit; without this, the rest of the buffer would hit the broken
    pipe again and print "Exception ignored ... BrokenPipeError".
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run `reconcile` with `argv` (default: sys.argv); return the exit code.

    Output is flushed before returning, so a reader that went away is noticed here: the
    command then ends quietly with 141, like a command killed by SIGPIPE.
    """
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=command_word(words))
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        try:  # argparse prints to sys.stdout/sys.stderr and exits: send both to out/err
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                args = parser.parse_args(words)
        except SystemExit as exc:
            stdout.flush()
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        try:
            code: int = args.func(args, stdout, stderr)
        except UsageError as exc:
            stderr.write(f"reconcile: error: {exc}\n")
            return EXIT_USAGE
        except ReconcilerError as exc:
            stderr.write(f"reconcile: {exc}\n")
            return EXIT_USAGE
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        stdout.flush()
    except BrokenPipeError:
        _quiet_stdout(stdout)
        return EXIT_BROKEN_PIPE
    return code
