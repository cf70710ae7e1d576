"""The in-memory connector harness: a L{Connector} on a C{task.Clock}, sockets on a fake
L{IPomeloTransport}, the packages a client sends, and the checks that a closed connection left
nothing behind (used by the tests of tests/server, tests/demo and tests/ops).

A test feeds bytes to a socket as a TCP stream (C{dataReceived}) or as whole WebSocket messages
(C{messageReceived}), advances the clock by 0 to end the reactor turn (the connector writes each
connection's output once per turn), and compares what the transport was given with protocol.md's
bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pomelo_twisted.demo import make_app
from pomelo_twisted.protocol.connection import ConnectionState
from pomelo_twisted.protocol.message import Message, MessageType, decode_message, encode_message
from pomelo_twisted.protocol.package import Package, PackageDecoder, PackageType, encode_package
from pomelo_twisted.server.config import ConnectorConfig
from pomelo_twisted.server.connector import Connector
from pomelo_twisted.server.interfaces import IPomeloTransport
from pomelo_twisted.services.application import Application, HandlerError
from tests.support.vectors import SPEC_CLIENT_PROTOS, SPEC_SERVER_PROTOS, h

HANDSHAKE_1 = encode_package(PackageType.HANDSHAKE, b'{"sys":1}')
ACK = h("02 00 00 00")
HEARTBEAT = h("03 00 00 00")
ERROR_500 = h("01 00 00 0c 7b 22 63 6f 64 65 22 3a 35 30 30 7d")
ERROR_501 = h("01 00 00 0c 7b 22 63 6f 64 65 22 3a 35 30 31 7d")


def data(mtype: int, mid: int, route: str | int | None, body: bytes = b"") -> bytes:
    """A whole DATA package holding one message."""
    return encode_package(PackageType.DATA, encode_message(mtype, mid, route, body))


def request(mid: int, route: str | int, body: bytes = b"{}") -> bytes:
    return data(MessageType.REQUEST, mid, route, body)


def notify(route: str | int, body: bytes = b"{}") -> bytes:
    return data(MessageType.NOTIFY, 0, route, body)


def response(mid: int, body: bytes) -> bytes:
    """The DATA package of a response, as the server must write it."""
    return encode_package(PackageType.DATA, encode_message(MessageType.RESPONSE, mid, None, body))


def push(route: str | int, body: bytes) -> bytes:
    return encode_package(PackageType.DATA, encode_message(MessageType.PUSH, 0, route, body))


def kick_package(reason: str) -> bytes:
    return encode_package(
        PackageType.KICK, json.dumps({"reason": reason}, separators=(",", ":")).encode()
    )


@implementer(IPomeloTransport)
class FakeTransport:
    """Records what the socket does to its transport."""

    def __init__(self, name: str = "tcp") -> None:
        self.name = name
        self.writes: list[bytes] = []
        self.lost = 0
        self.aborted = 0
        #: Writes made after the socket closed the transport (there must be none).
        self.late_writes: list[bytes] = []

    def writePackages(self, data: bytes) -> None:
        assert isinstance(data, bytes), data
        if self.closed:
            self.late_writes.append(data)
        self.writes.append(data)

    def writePackageSequence(self, packages: list[bytes]) -> None:
        self.writePackages(b"".join(packages))

    def loseConnection(self) -> None:
        self.lost += 1

    def abortConnection(self) -> None:
        self.aborted += 1

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    @property
    def closed(self) -> bool:
        return bool(self.lost or self.aborted)


class Client:
    """One in-memory connection: feeds a socket and reads what it wrote.

    @ivar ws: whether input is fed as WebSocket messages (one package each) or as a TCP stream.
    """

    def __init__(self, connector: Connector, clock: task.Clock, ws: bool = False) -> None:
        self.connector = connector
        self.clock = clock
        self.ws = ws
        self.transport = FakeTransport("ws" if ws else "tcp")
        self.sock = connector.build_socket(self.transport)
        self._read = 0

    def feed(self, data: bytes) -> None:
        """Deliver bytes: one TCP chunk, or one WebSocket message."""
        if self.ws:
            self.sock.messageReceived(data)
        else:
            self.sock.dataReceived(data)

    def turn(self) -> list[bytes]:
        """End the reactor turn; return the writes made since the last call."""
        self.clock.advance(0)
        return self.take()

    def take(self) -> list[bytes]:
        writes = self.transport.writes[self._read :]
        self._read = len(self.transport.writes)
        return writes

    def exchange(self, data: bytes) -> bytes:
        """Feed C{data}, end the turn, and return everything written (joined)."""
        self.feed(data)
        return b"".join(self.turn())

    def handshake(self, body: bytes = b'{"sys":1}') -> bytes:
        return self.exchange(encode_package(PackageType.HANDSHAKE, body))

    def connect(self, body: bytes = b'{"sys":1}') -> Client:
        """Handshake and ACK; the answers are read and dropped."""
        answer = self.handshake(body)
        assert answer[:1] == b"\x01" and b'"code":200' in answer, answer
        self.exchange(ACK)
        assert self.state is ConnectionState.WORKING
        return self

    def lose(self) -> None:
        """The transport reports the connection gone, as Twisted would after a close."""
        self.sock.connectionLost(None)

    @property
    def state(self) -> ConnectionState:
        return self.sock.connection.state

    @property
    def session(self) -> Any:
        return self.sock.session


def packages(written: bytes) -> list[Package]:
    """Decode written bytes that must hold whole packages."""
    decoder = PackageDecoder()
    out = decoder.feed(written)
    assert decoder.buffered == 0, written
    return out


def messages(written: bytes) -> list[Message]:
    """The messages of the DATA packages in C{written}."""
    return [decode_message(p.body) for p in packages(written) if p.type is PackageType.DATA]


def make_test_app() -> Application:
    """A small app with one route per dispatch outcome of §10.1."""
    app = Application("connector")
    calls: list[tuple[str, Any]] = []
    app.calls = calls  # type: ignore[attr-defined]

    @app.route("connector.testHandler.echo")
    def echo(msg: Any, session: Any) -> Any:
        calls.append(("echo", msg))
        return msg

    @app.route("connector.testHandler.none")
    def none(msg: Any, session: Any) -> None:
        calls.append(("none", msg))
        return None

    @app.route("connector.testHandler.code3")
    def code3(msg: Any, session: Any) -> Any:
        raise HandlerError({"code": 3, "msg": "three"})

    @app.route("connector.testHandler.bare")
    def bare(msg: Any, session: Any) -> Any:
        raise HandlerError()

    @app.route("connector.testHandler.nocode")
    def nocode(msg: Any, session: Any) -> Any:
        raise HandlerError({"msg": "x"})

    @app.route("connector.testHandler.boom")
    def boom(msg: Any, session: Any) -> Any:
        calls.append(("boom", msg))
        raise ValueError("boom")

    @app.route("connector.testHandler.push")
    def pushes(msg: Any, session: Any) -> Any:
        session.push_message("onChat", {"msg": "hi"})
        session.push_message("onOther", {"msg": "yo"})
        return {"code": 200}

    return app


def make_connector(app: Application | None = None, **config: Any) -> tuple[Connector, task.Clock]:
    clock = task.Clock()
    connector = Connector(app if app is not None else make_app(), clock, ConnectorConfig(**config))
    return connector, clock


class ConnectorTestCase(SynchronousTestCase):
    """Shared set-up: a connector on a clock, and helpers for closing checks."""

    ws = False

    def connector(self, app: Application | None = None, **config: Any) -> None:
        self.conn, self.clock = make_connector(app, **config)

    def client(self) -> Client:
        return Client(self.conn, self.clock, ws=self.ws)

    def assertClosedAndClean(self, client: Client, aborted: bool = False) -> None:
        """The connection closed through its transport, and nothing of it is left once the
        transport reports the close: no session, no timer, no socket."""
        self.assertIs(client.state, ConnectionState.CLOSED)
        if aborted:
            self.assertEqual(client.transport.aborted, 1)
            self.assertEqual(client.transport.lost, 0)
        else:
            self.assertEqual(client.transport.lost, 1)
        client.lose()
        self.clock.advance(0)
        self.assertEqual(client.transport.late_writes, [])
        self.assertNotIn(client.sock, self.conn.sockets)
        self.assertIsNone(client.sock.session)
        self.assertEqual(self.conn.session_service.sessions_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TemplateApp:
    """Pomelo's template as used by protocol.md's examples: handlers
    C{connector.entryHandler.{entry,publish,subscribe}}, user dictionary C{["onChat"]}, the
    protos of §9.3.1 (when C{protos}), so that every example of §7.5, §9.3.6 and §19.1 can be
    compared byte for byte."""

    SERVER_PROTOS = SPEC_SERVER_PROTOS
    CLIENT_PROTOS = SPEC_CLIENT_PROTOS

    @classmethod
    def make(cls, testcase: SynchronousTestCase, entry_answer: Any = None) -> Application:
        path = tempfile.mkdtemp()
        testcase.addCleanup(shutil.rmtree, path)
        with open(os.path.join(path, "dictionary.json"), "w") as f:
            json.dump(["onChat"], f)
        with open(os.path.join(path, "serverProtos.json"), "w") as f:
            json.dump(cls.SERVER_PROTOS, f)
        with open(os.path.join(path, "clientProtos.json"), "w") as f:
            json.dump(cls.CLIENT_PROTOS, f)
        app = Application("connector", config_dir=path)
        received: list[Any] = []
        app.received = received  # type: ignore[attr-defined]

        @app.route("connector.entryHandler.entry")
        def entry(msg: Any, session: Any) -> Any:
            received.append(msg)
            return (
                entry_answer
                if entry_answer is not None
                else {"code": 200, "msg": "game server is ok."}
            )

        @app.route("connector.entryHandler.publish")
        def publish(msg: Any, session: Any) -> Any:
            return {"code": 200}

        @app.route("connector.entryHandler.subscribe")
        def subscribe(msg: Any, session: Any) -> Any:
            return {"code": 200}

        return app
