"""
Browser test: the official Pomelo browser client, in headless Chromium, against the connector.

The client is the C{pomelo-jsclient-websocket} build that ships in the npm C{pomelo} 2.2.7
package's template web-server (C{template/web-server/public/js/lib/build/build.js}, loaded with
C{require('boot')} as the template's C{index.html} does). C{tests/browser/run.js} serves
C{tests/browser/index.html} and C{test.js} with that library, drives Debian's C{/usr/bin/chromium}
through C{playwright-core}, and prints one line of JSON with a result per step: C{pomelo.init},
a request on every demo route, the C{onPush}/C{onNotify}/C{onBroadcast} pushes, protobuf both
ways on the C{proto} route, an unknown route (code 500), heartbeats past twice the interval, and a
kick of its own uid (C{onKick}, then the close). On failure it saves a screenshot of the page in
C{$BROWSER_ARTIFACTS} (default C{tests/browser/artifacts/}).

The connector runs in this process on the real reactor, with the demo app. Needs C{node} and
C{/usr/bin/chromium} (C{tests/browser/install.sh} installs Debian's chromium; CI runs it); the test
runs C{npm install} in C{tests/browser} when its packages are missing (L{tests.support.npm}).
Without C{node}, Chromium or C{npm} the test is skipped, except under CI (C{CI} set), where it
fails instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.npm import node, node_packages
from tests.support.servers import DemoServerMixin, decode_output, json_result
from tests.support.tools import Unavailable, unavailable

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSER_DIR = os.path.join(HERE, "browser")
RUN_JS = os.path.join(BROWSER_DIR, "run.js")
CHROMIUM = "/usr/bin/chromium"
NODE_PACKAGES = ("pomelo", "playwright-core")


def _summary(result: dict[str, Any]) -> str:
    """One line per step, then what else run.js found, for a failure message."""
    lines = []
    for step in result.get("steps", []):
        mark = "PASS" if step.get("ok") else "FAIL"
        extra = f": {step['error']}" if step.get("error") else ""
        lines.append(f"  {mark} {step.get('name')} ({step.get('ms')} ms){extra}")
    for key in ("error", "pageErrors", "events", "console", "screenshot", "resultFile"):
        if result.get(key):
            lines.append(f"{key}: {json.dumps(result[key], ensure_ascii=False)}")
    return "\n".join(lines)


class BrowserClientTests(DemoServerMixin, TestCase):
    """The demo app, served by the connector, driven by the Pomelo browser client in Chromium."""

    timeout = 60

    def setUp(self) -> Any:
        why = "the browser test drives the Pomelo browser client in headless Chromium from Node.js"
        try:
            self.node = node()
        except Unavailable as e:
            unavailable(self, f"{e} ({why}; bash tests/browser/install.sh installs the rest)")
        if not os.access(CHROMIUM, os.X_OK):
            unavailable(
                self,
                f"{CHROMIUM} missing ({why}): run `bash tests/browser/install.sh` as root "
                "(it installs Debian's chromium package and the npm packages)",
            )
        try:
            node_packages(BROWSER_DIR, NODE_PACKAGES)
        except Unavailable as e:
            unavailable(self, f"{e} ({why}; or run bash tests/browser/install.sh)")
        return self.startDemoServer()

    @defer.inlineCallbacks
    def test_official_browser_client(self) -> Any:
        """
        Every step of C{tests/browser/test.js} passes in Chromium: init, every demo route,
        pushes, protobuf both ways, an unknown route, heartbeats, and a kick that closes the
        socket; afterwards the server has no connection left.
        """
        d = getProcessOutputAndValue(
            self.node,
            [RUN_JS, "127.0.0.1", str(self.portNumber)],
            env=dict(os.environ),
            path=BROWSER_DIR,
            reactor=reactor,
        )

        def killed(reason: Failure) -> Any:
            # getProcessOutputAndValue errbacks with (out, err, signal) when the process is killed.
            if isinstance(reason.value, tuple) and len(reason.value) == 3:
                out, err, signal = reason.value
                return out, err, f"signal {signal}"
            return reason

        d.addErrback(killed)
        out, err, code = yield d
        result = json_result(out)
        if code != 0 or result is None or result.get("ok") is not True:
            shown = _summary(result) if result is not None else decode_output(out)
            self.fail(
                f"the Pomelo browser client in Chromium failed against the connector on port "
                f"{self.portNumber} (run.js exit status {code}).\n{shown}\n"
                f"full JSON: {json.dumps(result, ensure_ascii=False) if result else None}\n"
                f"stderr:\n{decode_output(err)}"
            )
        names = [step["name"] for step in result["steps"]]
        self.assertEqual(len(names), 12, f"unexpected steps: {names}")
        yield self.connector.wait_closed(5.0)
        self.assertEqual(
            self.connector.sockets,
            set(),
            "the server still has the browser's connection open after the kick",
        )
