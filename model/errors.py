"""The model's exceptions: one root, `ModelError`, with subclasses that carry data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Issue:
    """One problem found in a domain file: its line (None when unknown) and a sentence for a user."""

    line: int | None
    message: str

    def render(self, file: str | Path | None) -> str:
        """Format the issue as `file:line: message`, the way compilers do, for terminals."""
        where = str(file) if file is not None else "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


class ModelError(Exception):
    """Root of every error the model raises; nothing else escapes `model.parse`."""


class InvalidDomainError(ModelError):
    """A domain document is invalid; carries every issue found in it, not just the first."""

    def __init__(self, file: str | Path | None, issues: Sequence[Issue]) -> None:
        self.file = file
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(i.render(file) for i in self.issues))


class RenderError(ModelError):
    """A valid domain cannot be turned into a QEMU command line (e.g. an unknown emulator)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(message)


class NetworkError(ModelError):
    """A libvirt network cannot give a bridge (raised by `model.parse.BridgeLookup`s).

    Carries the network's name and a sentence for a user: which file, which line, what to do.
    """

    def __init__(self, network: str, message: str) -> None:
        self.network = network
        self.message = message
        super().__init__(message)
