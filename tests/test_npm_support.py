"""L{tests.support.npm}: the node-driven tests install their npm packages on first use, once,
one process at a time, and say how to get them when they cannot.

A fake C{npm} (a shell script on C{PATH}) stands for the real one, so nothing here touches the
network.
"""

from __future__ import annotations

import fcntl
import os
import stat

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import npm, tools

PACKAGES = ("pomelo-protocol", "ws")


class NodePackagesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        self.bin = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        os.makedirs(self.bin)
        self.calls = os.path.join(self.bin, "calls")
        path = os.environ.get("PATH")
        os.environ["PATH"] = self.bin

        def restore() -> None:
            if path is None:
                del os.environ["PATH"]
            else:
                os.environ["PATH"] = path

        self.addCleanup(restore)

    def fake_npm(self, body: str) -> None:
        """Put an C{npm} on PATH that logs its arguments, then runs C{body} (a shell script)."""
        script = os.path.join(self.bin, "npm")
        with open(script, "w") as f:
            f.write(f'#!/bin/sh\nPATH=/usr/bin:/bin\necho "$@" >> {self.calls}\n{body}\n')
        os.chmod(script, stat.S_IRWXU)

    def npm_calls(self) -> list[str]:
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            return f.read().splitlines()

    def test_installed_once(self) -> None:
        """Missing packages are installed by C{npm install} in the folder, and only once."""
        self.fake_npm("mkdir -p node_modules/pomelo-protocol node_modules/ws")
        npm.node_packages(self.folder, PACKAGES)
        npm.node_packages(self.folder, PACKAGES)
        self.assertEqual(npm.missing_packages(self.folder, PACKAGES), [])
        [call] = self.npm_calls()
        self.assertTrue(call.startswith("install "), call)

    def test_present_needs_no_npm(self) -> None:
        """Packages already there need no npm at all (none is on PATH here)."""
        for name in PACKAGES:
            os.makedirs(os.path.join(self.folder, "node_modules", name))
        npm.node_packages(self.folder, PACKAGES)
        self.assertEqual(self.npm_calls(), [])

    def test_no_npm(self) -> None:
        """Without npm, the message names what is missing and how to get it."""
        with self.assertRaises(tools.Unavailable) as caught:
            npm.node_packages(self.folder, PACKAGES)
        message = str(caught.exception)
        self.assertIn("lacks pomelo-protocol, ws", message)
        self.assertIn("npm is not on PATH", message)
        self.assertIn("run `npm install` in", message)

    def test_npm_fails_once(self) -> None:
        """A failing install (offline, say) shows npm's error, and is not retried per test."""
        self.fake_npm("echo 'npm error code ENOTFOUND' >&2; exit 1")
        for _ in range(2):
            with self.assertRaises(tools.Unavailable) as caught:
                npm.node_packages(self.folder, PACKAGES)
            self.assertIn("failed (exit status 1", str(caught.exception))
            self.assertIn("npm error code ENOTFOUND", str(caught.exception))
        self.assertEqual(len(self.npm_calls()), 1)

    def test_npm_leaves_packages_missing(self) -> None:
        """npm exiting 0 without installing what is needed is a failure too."""
        self.fake_npm("mkdir -p node_modules/ws")
        with self.assertRaises(tools.Unavailable) as caught:
            npm.node_packages(self.folder, PACKAGES)
        self.assertIn("still missing pomelo-protocol", str(caught.exception))

    def test_install_timeout(self) -> None:
        """An install that hangs is stopped at the timeout."""
        self.fake_npm("exec sleep 30")
        with self.assertRaises(tools.Unavailable) as caught:
            npm.node_packages(self.folder, PACKAGES, timeout=0.5)
        self.assertIn("took over", str(caught.exception))

    def test_waits_for_the_lock(self) -> None:
        """While another process holds the folder's lock, nothing runs; the wait is bounded."""
        self.fake_npm("mkdir -p node_modules/pomelo-protocol node_modules/ws")
        with open(os.path.join(self.folder, npm.LOCK_NAME), "w") as lock:
            # flock locks belong to the open file: this one excludes the helper's own.
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self.assertRaises(tools.Unavailable) as caught:
                npm.node_packages(self.folder, PACKAGES, timeout=0.5)
        self.assertIn(npm.LOCK_NAME, str(caught.exception))
        self.assertEqual(self.npm_calls(), [])


class UnavailableTests(SynchronousTestCase):
    def setUp(self) -> None:
        ci = os.environ.pop("CI", None)
        if ci is not None:
            self.addCleanup(os.environ.__setitem__, "CI", ci)
        else:
            self.addCleanup(os.environ.pop, "CI", None)

    def test_skip(self) -> None:
        with self.assertRaises(SkipTest) as caught:
            tools.unavailable(self, "no node")
        self.assertEqual(str(caught.exception), "no node")

    def test_fail_under_ci(self) -> None:
        os.environ["CI"] = "true"
        with self.assertRaises(self.failureException) as caught:
            tools.unavailable(self, "no node")
        self.assertIn("no node (CI installs it first", str(caught.exception))
