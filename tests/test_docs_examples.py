"""The Python examples in the docs type-check with mypy in strict mode, as users' code would.

The project's configuration is used (pyproject.toml: C{strict = true}, with calls into
Twisted's untyped functions allowed, which no example can avoid).

Every C{```python} block of L{PAGES} (every page of docs/ that has one) is checked on its
own. A block that is a fragment uses names an earlier block or the text gives it (C{app},
C{connector}, a C{session}); L{CONTEXT} declares each of those, and a block gets the
declarations of the names it uses without binding them itself. The blocks of L{SCRIPT_PAGES}
are untyped scripts, checked as such (see there). A block that cannot stand alone even so
(the body of an C{inlineCallbacks} function) is left out only by L{SKIP_MARKER} on the line
before its fence, which gives the reason. Skipped only when mypy is not installed.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    "docs/index.md",
    "docs/embedding.md",
    "docs/cluster.md",
    "docs/crypto.md",
    "docs/security.md",
    "docs/client.md",
    "docs/operations.md",
]

#: Pages whose examples are the untyped scripts a user runs: their functions need no
#: annotations, nor do their empty containers, but the bodies are checked (C{strict} checks
#: untyped functions), so every name and call into pomelo_twisted or Twisted still is.
SCRIPT_PAGES = {"docs/client.md", "docs/operations.md"}
_UNTYPED = '# mypy: allow-untyped-defs, disable-error-code="var-annotated"\n'

#: On the line before a block's fence, followed by the reason and C{-->}: the block is not
#: type-checked (it must still parse).
SKIP_MARKER = "<!-- not type-checked: "

#: What a fragment may take from its page, by name.
CONTEXT = {
    "app": "app = pomelo_twisted.Application('connector')",
    "connector": "connector: pomelo_twisted.Connector",
    "connector_service": "connector_service: pomelo_twisted.ConnectorService",
    "client": "client: pomelo_twisted.PomeloClient",
    "target": "target: str",
    "root": "import twisted.web.resource\nroot: twisted.web.resource.Resource",
    "config": "config: pomelo_twisted.ConnectorConfig",
    "password": "password: str | None",
    "factory": "factory: pomelo_twisted.PomeloConnectorFactory",
    "session": "session: pomelo_twisted.Session",
    "Any": "from typing import Any",
    "Session": "from pomelo_twisted import Session",
    "Connector": "from pomelo_twisted import Connector",
    "PomeloClient": "from pomelo_twisted import PomeloClient",
    "Backoff": "from pomelo_twisted import Backoff",
    "PomeloConnectorFactory": "from pomelo_twisted import PomeloConnectorFactory",
    "Deferred": "from twisted.internet.defer import Deferred",
    "some_deferred": "some_deferred: twisted.internet.defer.Deferred[dict[str, typing.Any]]",
    "reactor": "from twisted.internet import reactor",
    "serverFromString": "from twisted.internet.endpoints import serverFromString",
    "HandlerError": "from pomelo_twisted import HandlerError",
    "ConnectorService": "from pomelo_twisted import ConnectorService",
    "make_app": "def make_app() -> pomelo_twisted.Application:\n    raise NotImplementedError",
    "load_user": "async def load_user(uid: str) -> dict[str, typing.Any]:\n"
    "    raise NotImplementedError",
    "check_token": "async def check_token(token: str | None) -> dict[str, typing.Any]:\n"
    "    raise NotImplementedError",
}

_BLOCK = re.compile(
    rf"^(?:{re.escape(SKIP_MARKER)}(?P<why>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)


def blocks() -> list[tuple[str, int, str, str | None]]:
    """(page, line, code, why it is not checked or None) of every Python block of L{PAGES}."""
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code")) + 1
            found.append((page, line, match.group("code"), match.group("why")))
    return found


def examples() -> list[tuple[str, int, str]]:
    """(page, line, code) of every Python block of L{PAGES} to type-check."""
    return [(page, line, code) for page, line, code, why in blocks() if why is None]


def with_context(code: str) -> str:
    """C{code} after the L{CONTEXT} lines of the names it uses and does not bind."""
    tree = ast.parse(code)
    used: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    lines = ["import typing", "import pomelo_twisted", "import twisted.internet.defer"]
    lines += [CONTEXT[name] for name in sorted(used - bound) if name in CONTEXT]
    return "\n".join(lines) + "\n\n" + code


class DocsExamplesTests(SynchronousTestCase):
    def test_blocks_found(self) -> None:
        self.assertGreater(len(examples()), 10)

    def test_every_page_with_python_is_checked(self) -> None:
        pages = sorted(
            str(path.relative_to(ROOT))
            for path in (ROOT / "docs").glob("*.md")
            if "```python" in path.read_text(encoding="utf-8")
        )
        self.assertEqual(pages, sorted(PAGES))

    def test_skip_marker(self) -> None:
        """Only a marked block is left out; it says why, and it still parses. A marker
        anywhere but right before a Python block's fence is an error, not ignored."""
        skipped = [(page, line, code, why) for page, line, code, why in blocks() if why is not None]
        markers = sum((ROOT / page).read_text().count(SKIP_MARKER) for page in PAGES)
        self.assertEqual(len(skipped), markers)
        for page, line, code, why in skipped:
            self.assertTrue(why.strip(), f"{page}:{line}: the marker gives no reason")
            ast.parse(code)

    def test_context_for_fragments(self) -> None:
        code = with_context("app.check_client = lambda t, v: True\n")
        self.assertIn("app = pomelo_twisted.Application('connector')", code)
        self.assertNotIn("connector:", code)
        self.assertNotIn(
            "from twisted.internet import reactor\n\n",
            with_context("from twisted.internet import reactor\nreactor.stop()\n").split("\n\n")[0],
        )

    def test_mypy_strict(self) -> None:
        if importlib.util.find_spec("mypy") is None:
            raise SkipTest("mypy is not installed")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        names = {}
        for index, (page, line, code) in enumerate(examples()):
            path = directory / f"example_{index}.py"
            prefix = _UNTYPED if page in SCRIPT_PAGES else ""
            path.write_text(prefix + with_context(code), encoding="utf-8")
            names[path.name] = f"{page}:{line}"
        result = subprocess.run(
            [
                *(sys.executable, "-m", "mypy", "--no-incremental"),
                *("--config-file", str(ROOT / "pyproject.toml")),
                *sorted(str(p) for p in directory.iterdir()),
            ],
            cwd=ROOT,
            env={"MYPYPATH": str(ROOT / "examples"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        errors = [
            f"{names.get(Path(line.split(':')[0]).name, '?')}: {line}"
            for line in result.stdout.splitlines()
            if ": error:" in line
        ]
        self.assertEqual(errors, [], result.stdout[-3000:])
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr[-3000:])
