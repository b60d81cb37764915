"""qemud's domain model: libvirt domain XML in, validated frozen models and QEMU argv out.

This package is pure (no processes, no sockets) and never imports `reconciler`.
"""

from model.argv import (
    Runtime,
    balloon_target,
    command_line,
    environment,
    options,
    without_missing,
)
from model.cpuset import host_cpus
from model.domain import NAMESPACE, Desired, Domain, uuid_for_name
from model.errors import InvalidDomainError, Issue, ModelError, RenderError
from model.firmware import uses_uefi
from model.parse import Parsed, parse, parse_file
from model.serialize import to_xml

__all__ = [
    "NAMESPACE",
    "Desired",
    "Domain",
    "InvalidDomainError",
    "Issue",
    "ModelError",
    "Parsed",
    "RenderError",
    "Runtime",
    "balloon_target",
    "command_line",
    "environment",
    "host_cpus",
    "options",
    "parse",
    "parse_file",
    "to_xml",
    "uses_uefi",
    "uuid_for_name",
    "without_missing",
]
