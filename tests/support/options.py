"""The ``twistd pomelo-connector`` command line, parsed as twistd parses it, for the tests."""

from __future__ import annotations

from pomelo_twisted.ops.tap import Options


def tap_options(*args: str) -> Options:
    """C{args} parsed as ``twistd pomelo-connector`` parses its command line."""
    options = Options()
    options.parseOptions(list(args))
    return options
