"""The fast paths that lean on private internals check them and fall back to the stock path.

Each test replaces one fast path's L{Internals} by one that also asks for a name no release
has, as a future Twisted or Autobahn without one of today's names would look, and shows that
the stock path then serves real clients correctly and that one warning says so.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pomelo_twisted import Connector, ConnectorConfig, PomeloClient, PomeloConnectorFactory
from pomelo_twisted.adapters.internals import Internals
from pomelo_twisted.demo import make_app
from pomelo_twisted.ops import reactor as pomelo_reactor
from pomelo_twisted.server import tcp, websocket

GONE = "_a_name_no_release_has"


def broken(internals: Internals) -> Internals:
    """A copy of C{internals} that also needs a name that does not exist."""
    return Internals(internals.what, (*internals.names, GONE), internals.fallback)


class InternalsTests(SynchronousTestCase):
    def test_passes_and_remembers(self) -> None:
        internals = Internals("probe", ("real",), "the stock path")
        obj = type("Obj", (), {"real": 1})()
        with capturedLogs() as events:
            self.assertTrue(internals.check(obj))
            self.assertTrue(internals.ok)
            self.assertTrue(internals.check(object()))  # checked once: the first object counts
        self.assertEqual(events, [])

    def test_missing_name_warns_once(self) -> None:
        internals = Internals("probe", ("real", GONE), "the stock path")
        obj = type("Obj", (), {"real": 1})()
        with capturedLogs() as events:
            self.assertFalse(internals.check(obj))
            self.assertFalse(internals.check(obj))
        self.assertFalse(internals.ok)
        self.assertEqual(internals.missing, (GONE,))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(events[0]["missing"], GONE)
        self.assertEqual(events[0]["fallback"], "the stock path")

    def test_todays_releases_have_every_name(self) -> None:
        """The installed Twisted and Autobahn pass every check (CI runs the newest ones)."""
        epoll = pomelo_reactor.PomeloEPollReactor()
        self.addCleanup(epoll._poller.close)
        self.assertEqual(
            [n for n in pomelo_reactor.EPOLL_INTERNALS.names if not hasattr(epoll, n)], []
        )
        self.assertIsNot(type(epoll).doPoll, EPollReactor.doPoll)


class EPollFallbackTests(SynchronousTestCase):
    def test_stock_do_poll(self) -> None:
        self.patch(pomelo_reactor, "EPOLL_INTERNALS", broken(pomelo_reactor.EPOLL_INTERNALS))
        with capturedLogs() as events:
            epoll = pomelo_reactor.PomeloEPollReactor()
        self.addCleanup(epoll._poller.close)
        self.assertIs(epoll.doPoll.func, EPollReactor.doPoll)  # type: ignore[attr-defined]
        self.assertIs(epoll.doIteration, epoll.doPoll)
        fired: list[int] = []
        epoll.callLater(0, fired.append, 1)
        epoll.runUntilCurrent()
        epoll.doIteration(0)  # polls the stock way without error
        self.assertEqual(fired, [1])
        self.assertEqual([e["what"] for e in events], ["pomelo-epoll"])


class TransportFallbackTests(TestCase):
    timeout = 30

    async def _serve(self, transport: str) -> dict[str, Any]:
        connector = Connector(make_app(), reactor, ConnectorConfig(heartbeat=3))
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            PomeloConnectorFactory(connector)
        )
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        client = PomeloClient(reactor)
        if transport == "ws":
            await client.connect(f"ws://127.0.0.1:{number}/")
        else:
            await client.connect(f"tcp:host=127.0.0.1:port={number}")
        try:
            pushed: list[Any] = []
            client.on("onPush", pushed.append)
            answer = await client.request("connector.entryHandler.echo", {"n": 1, "s": "x" * 300})
            await client.request("connector.entryHandler.push", {"route": "onPush", "n": 2})
        finally:
            await client.close()
        return {"answer": answer, "pushed": pushed}

    def _check(self, module: Any, name: str, transport: str) -> Any:
        self.patch(module, name, broken(getattr(module, name)))

        async def run() -> None:
            with capturedLogs() as events:
                result = await self._serve(transport)
            self.assertEqual(result["answer"], {"n": 1, "s": "x" * 300})
            self.assertEqual(result["pushed"], [{"route": "onPush", "n": 2}])
            warnings = [e for e in events if e.get("missing") == GONE]
            self.assertEqual(len(warnings), 1)
            self.assertFalse(getattr(module, name).ok)

        return ensureDeferred(run())

    def test_tcp_without_write_now(self) -> Any:
        return self._check(tcp, "TCP_INTERNALS", "tcp")

    def test_websocket_without_fast_path(self) -> Any:
        return self._check(websocket, "WS_INTERNALS", "ws")
