"""The tools of the tests driven from Node.js (tests/interop, tests/browser), got on first use.

Each of those folders has a C{package.json}; L{node_packages} runs C{npm install} in it the first
time a test needs its packages, so the README's C{python -m twisted.trial tests} needs no step of
its own on a machine with C{node} and C{npm}. One install at a time: a lock file in the folder
keeps trial's C{-j} workers from running npm there together (the one that waited finds the
packages installed). Every wait is bounded by L{INSTALL_TIMEOUT}.

What cannot be had here (no C{node} or C{npm}, npm failing, say offline) raises L{Unavailable}
with how to get it; L{unavailable} turns that into a skip, or a failure under CI, which installs
everything before running the tests.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Sequence

from .tools import Unavailable

#: The folder of the test suite.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The longest an install (or the wait for another worker's install) may take, in seconds.
INSTALL_TIMEOUT = 300.0

#: The lock file, in the folder being installed (ignored by git).
LOCK_NAME = ".npm-install.lock"

#: Why a folder could not be installed, once tried in this process (no retry per test).
_failed: dict[str, str] = {}


def node() -> str:
    """The path of C{node}, or L{Unavailable}."""
    path = shutil.which("node")
    if path is None:
        raise Unavailable("node is not installed (not on PATH): install Node.js 18 or later")
    return path


def missing_packages(folder: str, names: Sequence[str]) -> list[str]:
    """The packages of C{names} that C{folder}/node_modules lacks."""
    return [n for n in names if not os.path.isdir(os.path.join(folder, "node_modules", n))]


def node_packages(folder: str, names: Sequence[str], timeout: float = INSTALL_TIMEOUT) -> None:
    """Make sure C{folder}/node_modules holds every package of C{names}: run C{npm install} in
    C{folder} (from its package.json) when one is missing, at most once per process, one
    process at a time; raise L{Unavailable} if they cannot be had."""
    if not missing_packages(folder, names):
        return
    if folder in _failed:
        raise Unavailable(_failed[folder])
    try:
        _install(folder, names, timeout)
    except Unavailable as e:
        _failed[folder] = str(e)
        raise


def _install(folder: str, names: Sequence[str], timeout: float) -> None:
    where = os.path.relpath(folder, os.path.dirname(TESTS))
    how = f"run `npm install` in {where}"
    npm = shutil.which("npm")
    if npm is not None:
        npm = os.path.abspath(npm)
    else:
        raise Unavailable(
            f"{where}/node_modules lacks {', '.join(missing_packages(folder, names))} and npm "
            f"is not on PATH to install them: install Node.js with npm, or {how}"
        )
    deadline = time.monotonic() + timeout
    with open(os.path.join(folder, LOCK_NAME), "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"another process held {where}/{LOCK_NAME} (an npm install) for over "
                        f"{timeout:.0f} s: {how}"
                    ) from None
                time.sleep(0.2)
        try:
            # Another worker may have installed them while this one waited.
            if not missing_packages(folder, names):
                return
            try:
                done = subprocess.run(
                    [
                        npm,
                        "install",
                        "--no-package-lock",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                    ],
                    cwd=folder,
                    capture_output=True,
                    timeout=max(deadline - time.monotonic(), 1.0),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise Unavailable(
                    f"npm install in {where} took over {timeout:.0f} s: {how}"
                ) from None
            absent = missing_packages(folder, names)
            if done.returncode != 0 or absent:
                output = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
                tail = "\n".join(output.splitlines()[-15:])
                raise Unavailable(
                    f"npm install in {where} failed (exit status {done.returncode}"
                    f"{', still missing ' + ', '.join(absent) if absent else ''}): {how}\n{tail}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
