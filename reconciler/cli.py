"""The `reconcile` command line: argument parsing and the read-only commands.

Exit codes follow one rule everywhere: 0 success, 1 something the user's files got wrong
(invalid, conflicting, failed), 2 a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import model

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp")


def is_domain_file(path: Path) -> bool:
    """Whether a directory entry's name is a domain file: `*.xml`, not hidden, not editor debris."""
    name = path.name
    return (
        name.endswith(".xml")
        and not name.startswith((".", "#"))
        and not name.endswith(IGNORED_SUFFIXES)
    )


def expand(paths: Sequence[str]) -> Iterator[Path]:
    """Yield the files named on the command line; a directory stands for its domain files, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if is_domain_file(p) and p.is_file())
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
    if args.json:
        json.dump(model.command_line(parsed.domain), out)
        out.write("\n")
    else:
        out.write(format_argv(model.options(parsed.domain)))
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and a one-line hint on usage errors (its default is 2 too)."""

    def error(self, message: str) -> Any:
        """Print the usage error and exit 2."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `reconcile` and its subcommands."""
    parser = _Parser(prog="reconcile", description="Declarative reconciler for QEMU virtual "
                     "machines described by libvirt domain XML files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    val = sub.add_parser("validate", help="check domain files (exit 1 when any is invalid)")
    val.add_argument("--json", action="store_true", help="print one JSON array, an object a file")
    val.add_argument("paths", nargs="+", metavar="PATH", help="domain files or directories")
    val.set_defaults(func=cmd_validate)
    argv = sub.add_parser("argv", help="print the QEMU command line of a domain file")
    argv.add_argument("--json", action="store_true", help="print a JSON array of strings")
    argv.add_argument("file", type=Path, metavar="FILE")
    argv.set_defaults(func=cmd_argv)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Run `reconcile` with `argv` (default: sys.argv); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(err or sys.stderr)
        return EXIT_USAGE
    code: int = args.func(args, out or sys.stdout, err or sys.stderr)
    return code
