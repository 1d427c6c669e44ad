"""A missing prerequisite: a skip on a developer's machine, a failure under CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    """CI=true (any case), as CI systems and `.ci/run`'s callers set it."""
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip, saying why; under CI fail instead: a CI run that silently skipped would prove nothing."""
    if under_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
