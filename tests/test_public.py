"""The public face: every exported name loads, and the package docstring's example runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

import pomelo_twisted


def docstring_example() -> str:
    """The code block after "Typical use::" in the package docstring."""
    doc = pomelo_twisted.__doc__ or ""
    block = doc.split("Typical use::", 1)[1]
    return textwrap.dedent(block).strip() + "\n"


class PublicFaceTests(TestCase):
    def test_every_exported_name_loads(self) -> None:
        for name in pomelo_twisted.__all__:
            self.assertIsNotNone(getattr(pomelo_twisted, name), name)
        self.assertEqual(sorted(dir(pomelo_twisted)), sorted(pomelo_twisted.__all__))

    def test_unknown_name(self) -> None:
        with self.assertRaises(AttributeError):
            pomelo_twisted.NoSuchThing  # noqa: B018

    def test_star_import_in_a_fresh_interpreter(self) -> None:
        """C{from pomelo_twisted import *} gives every name, and installs no reactor."""
        code = (
            "import sys\n"
            "from pomelo_twisted import *\n"
            "import pomelo_twisted\n"
            "missing = [n for n in pomelo_twisted.__all__ if n not in globals()]\n"
            "print(missing, 'twisted.internet.reactor' in sys.modules)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(pomelo_twisted.__file__).parent.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.assertEqual(out.stdout.strip(), "[] False")

    async def _run_example(self) -> None:
        from pomelo_twisted import PomeloClient

        source = docstring_example().replace('"tcp:3010"', '"tcp:0:interface=127.0.0.1"')
        self.assertIn("from pomelo_twisted import", source)
        namespace: dict[str, Any] = {}
        exec(compile(source, "pomelo_twisted.__doc__", "exec"), namespace)
        port = await namespace["listening"]
        self.addCleanup(port.stopListening)
        client = PomeloClient(reactor)
        await client.connect(f"tcp:host=127.0.0.1:port={port.getHost().port}")
        try:
            answer = await client.request("connector.entryHandler.entry", {})
        finally:
            await client.close()
        self.assertEqual(answer, {"code": 200})

    def test_docstring_example_serves_a_client(self) -> None:
        return ensureDeferred(self._run_example())
