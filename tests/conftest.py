"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from tests.support.guest import Guest, build_guest


@pytest.fixture(scope="session")
def guest() -> Guest:
    """Return the cached test guest (kernel + initramfs), building it on first use.

    Build failures are not skipped: they propagate and fail the requesting test.
    """
    return build_guest()
