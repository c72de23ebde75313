"""Shared test helpers: CI-strict skips, a private Docker engine, the real PostgreSQL.

Usage::

    from tests.support import unavailable

    if not ready:
        unavailable("postgres: not reachable")   # fails when CI=true, skips otherwise
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["in_ci", "unavailable"]


def in_ci() -> bool:
    """True when running under CI (env CI=true), where no test may be skipped."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> NoReturn:
    """A required external part is missing: fail under CI, skip (with the reason) elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason)
