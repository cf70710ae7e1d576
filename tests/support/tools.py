"""Tools a test needs from the machine: got on first use where they can be, else said plainly.

A tool that cannot be had raises L{Unavailable} with how to get it; L{unavailable} turns that
into a skip, or a failure under CI, which installs every tool before running the tests.
"""

from __future__ import annotations

import os
from typing import NoReturn

from twisted.trial.unittest import SkipTest, SynchronousTestCase

__all__ = ["Unavailable", "unavailable"]


class Unavailable(Exception):
    """A tool the test needs cannot be had on this machine; the message says how to get it."""


def unavailable(case: SynchronousTestCase, message: str) -> NoReturn:
    """Skip C{case}: C{message} says what is missing. Under CI (C{CI} set) fail instead: CI
    installs every tool first, so a missing one there is a broken CI, not a machine without."""
    if os.environ.get("CI"):
        case.fail(f"{message} (CI installs it first, so this is a failure under CI)")
    raise SkipTest(message)
