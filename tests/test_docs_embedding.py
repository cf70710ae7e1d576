"""docs/embedding.md's first example imports only from pomelo_twisted and Twisted, and serves."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from pomelo_twisted import PomeloClient

DOC = Path(__file__).resolve().parent.parent / "docs" / "embedding.md"


def first_example() -> str:
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None
    return match.group(1)


class EmbeddingExampleTests(TestCase):
    timeout = 20

    def test_imports_only_the_public_face_and_twisted(self) -> None:
        tree = ast.parse(first_example())
        modules = [
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names
        ]
        self.assertIn("pomelo_twisted", modules)
        self.assertEqual(
            [m for m in modules if m != "pomelo_twisted" and not str(m).startswith("twisted.")], []
        )

    async def _serve(self) -> None:
        source = first_example().replace('"tcp:3010"', '"tcp:0:interface=127.0.0.1"')
        namespace: dict[str, Any] = {}
        exec(compile(source, str(DOC), "exec"), namespace)
        port = await namespace["listening"]
        self.addCleanup(port.stopListening)
        client = PomeloClient(reactor)
        await client.connect(f"ws://127.0.0.1:{port.getHost().port}/")
        try:
            answer = await client.request("connector.entryHandler.entry", {"name": "ann"})
        finally:
            await client.close()
        self.assertEqual(answer, {"code": 200, "msg": "hello ann"})

    def test_the_example_serves_a_client(self) -> Any:
        return ensureDeferred(self._serve())
