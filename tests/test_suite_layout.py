"""The test suite's own layout: test modules share code only through L{tests.support}.

A test module that imports another one couples the two (moving or splitting one breaks the
other) and makes trial collect the imported test classes twice when their names are imported.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

#: The folder of the test suite.
TESTS = os.path.dirname(os.path.abspath(__file__))


def python_files() -> list[str]:
    """Every Python file of the suite (not the npm installs of the node-driven tests)."""
    found = []
    for folder, dirs, files in os.walk(TESTS):
        dirs[:] = sorted(d for d in dirs if d not in ("node_modules", "__pycache__"))
        found += [os.path.join(folder, name) for name in sorted(files) if name.endswith(".py")]
    return found


def module_name(path: str) -> str:
    """The dotted name of the suite's file C{path} (C{tests/server/x.py} -> C{tests.server.x})."""
    relative = os.path.relpath(path, os.path.dirname(TESTS))
    parts = relative[: -len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(name: str) -> bool:
    """Whether C{name} is a folder of the suite (so C{from name import x} may import a module)."""
    root = os.path.dirname(TESTS)
    return name.split(".")[0] == "tests" and os.path.isdir(os.path.join(root, *name.split(".")))


def imported_test_modules(source: str, name: str) -> list[str]:
    """The test modules (a last name component C{test_*}) that C{source}, the module C{name},
    imports: absolute or relative, C{import a.test_x}, C{from a import test_x} or
    C{from a.test_x import y}."""
    package = name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            modules = [base]
            if is_package(base):
                modules += [f"{base}.{alias.name}" for alias in node.names]
        found += [m for m in modules if m.rsplit(".", 1)[-1].startswith("test_")]
    return found


class NoTestModuleImportsAnotherTests(SynchronousTestCase):
    def test_no_test_module_imported(self) -> None:
        """No file of the suite imports a test module: shared code lives in tests/support."""
        offenders = {}
        for path in python_files():
            with open(path, encoding="utf-8") as f:
                imported = imported_test_modules(f.read(), module_name(path))
            if imported:
                offenders[os.path.relpath(path, TESTS)] = imported
        if offenders:
            self.fail(
                "test modules imported (move what they share into tests/support):\n"
                + "\n".join(f"  {path}: {', '.join(names)}" for path, names in offenders.items())
            )

    def test_the_check_sees_every_form(self) -> None:
        """The check finds absolute, relative and from-imports of test modules, nothing else."""
        name = "tests.support.example"
        for source in (
            "import tests.server.test_socket",
            "from tests.server.test_socket import StateTests",
            "from tests import test_socket",
            "from .test_socket import StateTests",
            "from . import test_socket",
            "from ..protocol.test_package import h",
            "from .. import test_socket",
            "def f():\n    from tests.ops.test_metrics import parse\n",
        ):
            self.assertEqual(len(imported_test_modules(source, name)), 1, source)
        for source in (
            "import tests.support.connector",
            "from tests.support.connector import test_app",
            "from twisted.trial import unittest",
        ):
            self.assertEqual(imported_test_modules(source, name), [], source)

    def test_every_folder_is_a_package(self) -> None:
        """trial only finds the test modules of folders with an C{__init__.py}."""
        folders = {os.path.dirname(path) for path in python_files()}
        missing = sorted(
            os.path.relpath(folder, TESTS)
            for folder in folders
            if not os.path.exists(os.path.join(folder, "__init__.py"))
        )
        self.assertEqual(missing, [])
