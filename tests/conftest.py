"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.guest import Guest, build_guest


@pytest.fixture(scope="session")
def guest() -> Guest:
    """Return the cached test guest (kernel + initramfs), building it on first use.

    Build failures are not skipped: they propagate and fail the requesting test.
    """
    return build_guest()


LIBVIRT_NETWORKS = Path(__file__).resolve().parent / "data" / "libvirt-networks"
"""libvirt's 'default' network as libvirt 9.0 stores it (bridge virbr0), for every test."""


@pytest.fixture(autouse=True)
def libvirt_networks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Resolve `<interface type='network'>` against the test data, never this host's /etc.

    Set in the environment, so daemons and commands the tests start see it too.
    """
    monkeypatch.setenv("QEMUD_LIBVIRT_NETWORKS", str(LIBVIRT_NETWORKS))
    yield LIBVIRT_NETWORKS
