"""Connector settings, with Pomelo's option names noted where they differ."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectorConfig"]


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """Everything a connector needs to know about its protocol behaviour.

    Durations are in seconds. C{None} or 0 turns a deadline off.

    @ivar heartbeat: the interval advertised in the handshake (Pomelo's ``heartbeat``); 0 turns
        heartbeats off entirely (no heartbeat after the ACK, no timeout).
    @ivar heartbeat_timeout: silence after which a working connection is closed; defaults to
        twice the interval, as Pomelo does.
    @ivar use_dict: route dictionary compression (Pomelo's ``useDict``).
    @ivar use_protobuf: pomelo-protobuf bodies (Pomelo's ``useProtobuf``).
    @ivar max_package_size: the largest inbound package body accepted; checked on the header.
        64 KiB is far above any game message yet small enough that a hostile header pins little
        memory (Pomelo allows 16 MiB per connection).
    @ivar max_handshake_size: the largest handshake body accepted.
    @ivar first_byte_timeout: a new connection must send its first byte within this time.
    @ivar handshake_timeout: a classified connection must send a handshake within this time.
    @ivar ack_timeout: a handshaken connection must send the ACK within this time.
    @ivar kick_close_timeout: after a kick or error response the connection is closed gracefully;
        if the peer has not gone after this long, it is aborted.
    @ivar single_session: at most one session per uid (Pomelo's ``singleSession``).
    @ivar server_id: this frontend's id (Pomelo's ``frontendId``).
    @ivar use_crypto: require RSA-signed messages (Pomelo's ``useCrypto``, protocol.md §14).
    @ivar rsa_max_modulus_bits: the largest client RSA modulus accepted with C{use_crypto}; a
        bigger key makes every signature check expensive.
    """

    heartbeat: int = 3
    heartbeat_timeout: float | None = None
    use_dict: bool = True
    use_protobuf: bool = True
    max_package_size: int = 64 * 1024
    max_handshake_size: int = 16 * 1024
    first_byte_timeout: float | None = 10.0
    handshake_timeout: float | None = 15.0
    ack_timeout: float | None = 15.0
    kick_close_timeout: float = 5.0
    single_session: bool = False
    server_id: str = "connector-server-1"
    use_crypto: bool = False
    rsa_max_modulus_bits: int = 4096

    def __post_init__(self) -> None:
        if self.heartbeat < 0 or int(self.heartbeat) != self.heartbeat:
            raise ValueError("heartbeat must be a whole number of seconds, 0 for none")
        if self.max_package_size < 1 or self.max_package_size > 0xFFFFFF:
            raise ValueError("max_package_size must be between 1 and 16777215")

    @property
    def effective_heartbeat_timeout(self) -> float | None:
        """The heartbeat timeout in force, or None when heartbeats are off."""
        if not self.heartbeat:
            return None
        return self.heartbeat_timeout or 2.0 * self.heartbeat
