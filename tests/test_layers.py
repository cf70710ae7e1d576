"""The package's layers import one way only, and the protocol core imports no I/O library.

docs/architecture.md draws the layers; this test is the rule. It reads every module's imports
(all of them: module level, inside functions, and under C{TYPE_CHECKING}), so a type-only
import that points upward fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import pomelo_twisted

PACKAGE = Path(pomelo_twisted.__file__).parent

#: Each layer and the layers it may import (besides itself). The top-level modules
#: (C{__init__}, C{_version}) are the public face and may import anything.
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset(),
    "adapters": frozenset(),
    "services": frozenset({"protocol"}),
    "cluster": frozenset({"protocol", "adapters", "services"}),
    "server": frozenset({"protocol", "adapters", "services"}),
    "client": frozenset({"protocol", "adapters"}),
    "demo": frozenset({"protocol", "services"}),
    "ops": frozenset({"protocol", "adapters", "services", "cluster", "server", "demo"}),
}
#: Top-level modules every layer may use (the version string).
SHARED = frozenset({"_version"})
#: Libraries that do I/O or need an event loop: the sans-IO core must not import them.
IO_LIBRARIES = frozenset({"twisted", "autobahn", "txaio", "txredisapi", "socket", "asyncio"})


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """Every module C{path} imports, absolute, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, package)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from .. import server" names a layer in the alias, not in the module
            if target == "pomelo_twisted":
                found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, target))
    return found


def layer_of(module: str) -> str | None:
    """The layer of a C{pomelo_twisted} module, C{""} for a top-level one, C{None} outside."""
    parts = module.split(".")
    if parts[0] != "pomelo_twisted":
        return None
    if len(parts) == 1:
        return ""
    return parts[1] if parts[1] in ALLOWED else ""


def violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, package)
        layer = layer_of(source)
        if not layer:
            continue  # the public face
        for line, target in imports_of(path, package):
            where = f"{path.relative_to(package.parent)}:{line}"
            if layer == "protocol" and target.split(".")[0] in IO_LIBRARIES:
                found.append(f"{where}: the sans-IO core imports {target}")
            other = layer_of(target)
            if other is None or other == layer:
                continue
            if other == "":
                if target.split(".")[1] not in SHARED:
                    found.append(f"{where}: {layer} imports the public face ({target})")
            elif other not in ALLOWED[layer]:
                found.append(f"{where}: {layer} imports {target} ({other} is above or beside it)")
    return found


class LayerTests(SynchronousTestCase):
    def test_imports_run_one_way(self) -> None:
        self.assertEqual(violations(), [])

    def test_every_package_folder_is_a_known_layer(self) -> None:
        folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
        self.assertEqual(folders - set(ALLOWED), set())

    def test_the_check_sees_an_upward_import(self) -> None:
        """The checker itself: an upward import, even a type-only one, is reported."""
        package = Path(self.mktemp()) / "pomelo_twisted"
        (package / "protocol").mkdir(parents=True)
        (package / "protocol" / "probe.py").write_text(
            "from typing import TYPE_CHECKING\n"
            "from twisted.internet import defer\n"
            "if TYPE_CHECKING:\n"
            "    from ..server.connector import Connector\n"
        )
        found = violations(package)
        self.assertEqual(len(found), 2, found)  # one line per import statement
        self.assertIn("the sans-IO core imports twisted.internet", found[0])
        self.assertIn("protocol imports pomelo_twisted.server.connector", found[1])

    def test_the_protocol_core_loads_without_twisted(self) -> None:
        """Importing every protocol module in a fresh interpreter loads no Twisted at all."""
        import subprocess
        import sys

        modules = sorted(
            module_name(p) for p in (PACKAGE / "protocol").glob("*.py") if p.name != "__init__.py"
        )
        code = (
            "import sys\n"
            + "".join(f"import {m}\n" for m in modules)
            + "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
            + f" {sorted(IO_LIBRARIES - {'socket', 'asyncio'})!r})\n"
            + "print(','.join(bad))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=PACKAGE.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.assertEqual(out.stdout.strip(), "")
