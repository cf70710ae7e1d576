# -*- test-case-name: tests.client -*-
"""When to try again: the reconnection policy of a L{pomelo_twisted.client.PomeloClient}."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

# --- reconnection policy -----------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """When to reconnect after a connection is lost or an attempt fails.

    The delay before attempt I{n} (1, 2, ...) is C{min(maximum, initial * factor ** (n-1))},
    then stretched by a random fraction up to C{jitter} so that many clients dropped together
    do not all come back in the same instant. The defaults are libpomelo2's: 2 s, doubling, at
    most 30 s, forever.

    @ivar max_attempts: give up after this many failed attempts in a row; C{None}: never.
    @ivar after_kick: reconnect after a kick too (a server that restarts kicks everyone with
        a reason such as C{"server shutting down"}); off by default, as in libpomelo2.
    @ivar random: the source of jitter, a function returning a float in [0, 1).
    """

    initial: float = 2.0
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1
    max_attempts: int | None = None
    after_kick: bool = False
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def delay(self, attempt: int) -> float:
        """The delay before attempt C{attempt} (1-based)."""
        try:
            base = min(self.maximum, self.initial * float(self.factor) ** max(0, attempt - 1))
        except OverflowError:  # after ~1000 attempts: long past the maximum
            base = self.maximum
        return base * (1 + self.jitter * self.random()) if self.jitter else base


__all__ = [
    "Backoff",
]
