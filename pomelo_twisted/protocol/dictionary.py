"""The route dictionary (protocol.md §8): route strings <-> 2-byte codes.

Built as Pomelo builds it, so that clients that cached Pomelo's dictionary keep a valid cache:
handler routes sorted and numbered from 1, then the user's extra routes (``dictionary.json``) in
order. The version is the base64 MD5 of the compact JSON of route -> code.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable

from . import json_codec

__all__ = ["RouteDictionary"]


class RouteDictionary:
    """An immutable route dictionary.

    @ivar routeToCode: route -> code, in code order (Pomelo's ``dict``).
    @ivar codeToRoute: code -> route (Pomelo's ``abbrs``).
    @ivar version: Pomelo's ``dictVersion``.
    """

    __slots__ = ("codeToRoute", "routeToCode", "version")

    def __init__(self, handler_routes: Iterable[str] = (), extra_routes: Iterable[str] = ()):
        # JavaScript sorts strings by UTF-16 code units; so do we, for the same numbering.
        routes = sorted(set(handler_routes), key=lambda r: r.encode("utf-16-be", "surrogatepass"))
        seen = set(routes)
        for route in extra_routes:
            if route not in seen:
                seen.add(route)
                routes.append(route)
        if len(routes) > 0xFFFF:
            raise ValueError(f"{len(routes)} routes do not fit 2-byte dictionary codes")
        self.routeToCode: dict[str, int] = {route: i for i, route in enumerate(routes, 1)}
        self.codeToRoute: dict[int, str] = {i: route for route, i in self.routeToCode.items()}
        digest = hashlib.md5(json_codec.dumps(self.routeToCode)).digest()
        self.version: str = base64.b64encode(digest).decode("ascii")

    @classmethod
    def from_config_dir(cls, handler_routes: Iterable[str], path: str) -> RouteDictionary:
        """Build from handler routes plus C{path}/dictionary.json (a JSON array), if present."""
        extra: list[str] = []
        filename = os.path.join(path, "dictionary.json")
        if os.path.exists(filename):
            with open(filename, "rb") as f:
                data = f.read()
            try:
                loaded = json_codec.loads(data)
            except json_codec.JSONDecodeError as e:
                raise ValueError(f"{filename}: not valid JSON: {e}") from None
            if not isinstance(loaded, list) or not all(isinstance(r, str) for r in loaded):
                raise ValueError(f"{filename} must be a JSON array of route strings")
            extra = loaded
        return cls(handler_routes, extra)

    def route_to_code(self, route: str) -> int | None:
        """The code of C{route}, or None when the route is not in the dictionary."""
        return self.routeToCode.get(route)

    def code_to_route(self, code: int) -> str | None:
        """The route of C{code}, or None for an unknown code."""
        return self.codeToRoute.get(code)

    def __len__(self) -> int:
        return len(self.routeToCode)

    def __contains__(self, route: object) -> bool:
        return route in self.routeToCode
