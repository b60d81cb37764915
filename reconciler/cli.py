"""The `reconcile` command line: argument parsing and the read-only commands.

Exit codes follow one rule everywhere: 0 success, 1 something the user's files got wrong
(invalid, conflicting, failed), 2 a usage or setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import model
from model.edit import set_state
from reconciler.errors import ReconcilerError
from reconciler.loop import DAEMON_LOCK, DirLock, Reconciler, exit_code
from reconciler.paths import Layout
from reconciler.plan import Action, Blocked, Clean, Start, Stop, Wait
from reconciler.scan import Scanner, is_domain_file
from reconciler.status import DomainStatus, iso, read_status, write_atomic
from reconciler.status import schema as status_schema

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def expand(paths: Sequence[str]) -> Iterator[Path]:
    """Yield the files named on the command line; a directory stands for its domain files, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if is_domain_file(p.name) and p.is_file())
        else:
            yield path


def _issue_json(issue: model.Issue) -> dict[str, Any]:
    """An issue as the JSON object of `validate --json`."""
    return {"line": issue.line, "message": issue.message}


def _validate_one(path: Path) -> dict[str, Any]:
    """Parse one file into the record `validate --json` prints for it."""
    try:
        parsed = model.parse_file(path)
    except model.InvalidDomainError as exc:
        return {"file": str(path), "valid": False, "name": None, "uuid": None,
                "errors": [_issue_json(i) for i in exc.issues], "warnings": []}
    return {"file": str(path), "valid": True, "name": parsed.domain.name,
            "uuid": str(parsed.domain.uuid), "errors": [],
            "warnings": [_issue_json(w) for w in parsed.warnings]}


def _where(file: str, line: int | None) -> str:
    """`file:line` (or just `file` when the line is unknown)."""
    return f"{file}:{line}" if line is not None else file


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile validate`: check files and directories; exit 1 when any file is invalid."""
    records = [_validate_one(p) for p in expand(args.paths)]
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
    lines = [" ".join(shlex.quote(a) for a in option) for option in options]
    return " \\\n".join(lines) + "\n"


def cmd_argv(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile argv`: print the QEMU command line of one domain file."""
    try:
        parsed = model.parse_file(args.file)
    except model.InvalidDomainError as exc:
        for issue in exc.issues:
            err.write(f"{_where(str(args.file), issue.line)}: error: {issue.message}\n")
        return EXIT_INVALID
    for warning in parsed.warnings:
        err.write(f"{_where(str(args.file), warning.line)}: warning: {warning.message}\n")
    from reconciler import uefi
    firmware = uefi.descriptors() if parsed.domain.os.firmware == "efi" else None
    if args.json:
        json.dump(model.command_line(parsed.domain, firmware=firmware), out)
        out.write("\n")
    else:
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


def format_table(statuses: Sequence[DomainStatus]) -> str:
    """Render statuses as an aligned text table (like `virsh list --all`)."""
    rows = [("NAME", "STATE", "DESIRED", "PID", "RESTARTS", "REASON")]
    for st in statuses:
        rows.append((st.name, st.state, st.desired, str(st.pid or "-"), str(st.restarts),
                     st.reason or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def cmd_reconcile(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile` (daemon) and `reconcile --once [--dry-run]`."""
    if args.dry_run and not args.once:
        raise UsageError("--dry-run goes with --once")
    rec = Reconciler(layout_of(args), out=err)
    if not args.once:
        asyncio.run(rec.serve(resync=args.resync))
        return EXIT_OK
    result = asyncio.run(rec.once(dry_run=args.dry_run, lock_timeout=args.lock_timeout))
    if args.dry_run:
        for action in result.actions:
            out.write(_describe(action) + "\n")
        if not result.actions:
            out.write("nothing to do\n")
        return EXIT_OK
    out.write(format_table(sorted(result.statuses, key=lambda s: s.name)))
    return exit_code(result)


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile status [NAME] [--json] [--schema]`: read the status files; no daemon needed."""
    if args.schema:
        json.dump(status_schema(), out, indent=2)
        out.write("\n")
        return EXIT_OK
    layout = layout_of(args)
    current = read_status(layout.status_dir)
    if current is None:
        err.write(f"reconcile: no status yet in {layout.status_dir}: run 'reconcile' (the daemon) "
                  "or 'reconcile --once' on this directory first\n")
    domains = list(current.domains) if current else []
    if args.name is not None:
        domains = [d for d in domains if d.name == args.name]
        if not domains:
            err.write(f"reconcile: no domain named {args.name!r} in {layout.status_dir}\n")
            return EXIT_INVALID
    if args.json:
        data = [d.model_dump(mode="json") for d in domains]
        json.dump(data[0] if args.name is not None and len(data) == 1 else
                  {"updated_at": current.updated_at if current else None, "domains": data},
                  out, indent=2)
        out.write("\n")
    else:
        out.write(format_table(domains))
    return EXIT_OK


def cmd_set_state(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reconcile start|stop NAME`: set the desired state in the file, apply it if no daemon runs."""
    layout = layout_of(args)
    state: Literal["running", "stopped"] = "running" if args.command == "start" else "stopped"
    layout.ensure()
    scan = Scanner(layout.config_dir).scan()
    found = [c for c in scan.domains.values() if c.name == args.name]
    if not found:
        err.write(f"reconcile: no valid domain named {args.name!r} in {layout.config_dir}\n")
        return EXIT_INVALID
    path = found[0].path
    try:
        data = path.read_bytes()
        new = set_state(data, state, str(path))
    except model.InvalidDomainError as exc:
        for issue in exc.issues:
            err.write(f"{_where(str(path), issue.line)}: error: {issue.message}\n")
        return EXIT_INVALID
    write_atomic(path, new, stat.S_IMODE(path.stat().st_mode))
    out.write(f"{args.name}: desired state is now {state} ({path})\n")
    if DirLock(layout.run_dir / DAEMON_LOCK).held_elsewhere():
        out.write("the running daemon applies it\n")
        return EXIT_OK
    rec = Reconciler(layout, out=err)
    result = asyncio.run(rec.once())
    mine = [s for s in result.statuses if s.name == args.name and s.state != "conflict"]
    out.write(format_table(mine))
    return EXIT_OK if mine and mine[0].state == state else EXIT_INVALID


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and a one-line hint on usage errors."""

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `reconcile` and its subcommands."""
    parser = _Parser(prog="reconcile", description="Declarative reconciler for QEMU virtual "
                     "machines described by libvirt domain XML files. Without a command, runs "
                     "the daemon (or one pass with --once).")
    _where_options(parser, suppress=False)
    parser.add_argument("--once", action="store_true",
                        help="run one full pass, wait for it to settle, and exit "
                        "(0 converged, 1 something invalid, in conflict or failed, 2 setup)")
    parser.add_argument("--dry-run", action="store_true", help="with --once: print the plan only")
    parser.add_argument("--resync", type=float, default=30.0, metavar="SECONDS",
                        help="daemon: full pass at least this often (default 30)")
    parser.add_argument("--lock-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="--once: how long to wait for another reconciler (default 120)")
    parser.set_defaults(func=cmd_reconcile)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    val = sub.add_parser("validate", help="check domain files (exit 1 when any is invalid)")
    val.add_argument("--json", action="store_true", help="print one JSON array, an object a file")
    val.add_argument("paths", nargs="+", metavar="PATH", help="domain files or directories")
    val.set_defaults(func=cmd_validate)
    argv = sub.add_parser("argv", help="print the QEMU command line of a domain file")
    argv.add_argument("--json", action="store_true", help="print a JSON array of strings")
    argv.add_argument("file", type=Path, metavar="FILE")
    argv.set_defaults(func=cmd_argv)
    status = sub.add_parser("status", help="show domain states from the status files")
    _where_options(status, suppress=True)
    status.add_argument("name", nargs="?", metavar="NAME")
    status.add_argument("--json", action="store_true", help="print the status JSON")
    status.add_argument("--schema", action="store_true", help="print the JSON Schema of status.json")
    status.set_defaults(func=cmd_status)
    for verb, text in (("start", "set a domain's desired state to running"),
                       ("stop", "set a domain's desired state to stopped")):
        cmd = sub.add_parser(verb, help=f"{text} (applied now when no daemon runs)")
        _where_options(cmd, suppress=True)
        cmd.add_argument("name", metavar="NAME")
        cmd.set_defaults(func=cmd_set_state)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run `reconcile` with `argv` (default: sys.argv); return the exit code."""
    parser = build_parser()
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:  # argparse prints to sys.stdout/sys.stderr and exits: send both to out/err, return its code
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit as exc:
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
        return 130
    return code
