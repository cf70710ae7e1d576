# -*- test-case-name: tests.adapters.test_internals -*-
"""Speed-ups that lean on another project's private internals, checked before they are used.

Three fast paths read or override what Twisted and Autobahn do not promise to keep: the direct
send of L{pomelo_twisted.server.tcp.write_now} (private C{tcp.Server} attributes), the
WebSocket frame reader of L{pomelo_twisted.server.websocket} (Autobahn's parser state), and
the C{doPoll} of L{pomelo_twisted.ops.reactor} (private C{EPollReactor} attributes). Each holds
one L{Internals}: the first object it meets is checked for every name the fast path uses; if
one is missing (a new release renamed it), that fast path is off for the life of the process,
the stock path serves instead, and one warning says so. CI also runs the suite against the
newest Twisted and Autobahn, so a break shows there before users see it.
"""

from __future__ import annotations

from twisted.logger import Logger

__all__ = ["Internals"]

_log = Logger()


class Internals:
    """The private names one fast path uses, checked once per process on the first object.

    @ivar ok: C{True} once the check passed; C{False} before it and after a failed one.
    @ivar missing: the names the checked object lacked (empty until a check failed).
    """

    __slots__ = ("checked", "fallback", "missing", "names", "ok", "what")

    def __init__(self, what: str, names: tuple[str, ...], fallback: str) -> None:
        self.what = what
        self.names = names
        self.fallback = fallback
        self.ok = False
        self.checked = False
        self.missing: tuple[str, ...] = ()

    def check(self, obj: object) -> bool:
        """Whether the fast path may use C{obj}: checks the first object, then remembers.

        Call it as C{internals.ok or internals.check(obj)}: after a passed check it costs one
        attribute read.
        """
        if not self.checked:
            self.checked = True
            self.missing = tuple(name for name in self.names if not hasattr(obj, name))
            self.ok = not self.missing
            if self.missing:
                _log.warn(
                    "{what}: {kind} lacks {missing}; using {fallback} instead",
                    what=self.what,
                    kind=f"{type(obj).__module__}.{type(obj).__qualname__}",
                    missing=", ".join(self.missing),
                    fallback=self.fallback,
                )
        return self.ok
