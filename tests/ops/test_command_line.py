"""Every mistake on the ``pomelo-connector`` command line: one line naming it, exit status 1.

Each case of L{CASES} is parsed by twistd's own option parser and built by C{makeService} in
this process (twistd calls both the same way), which must exit with one line; a
representative of each kind of mistake (L{REAL}) also runs as the real command, in parallel
subprocesses, whose whole output must be that same line and whose exit status must be 1.

The one exception is a port already in use: twistd has begun logging by the time it listens,
so its output is twistd's start-up lines and then exactly one line naming the address.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

import pomelo_twisted
from pomelo_twisted.ops import tap
from pomelo_twisted.ops.service import ConnectorService

WORKTREE = Path(pomelo_twisted.__file__).resolve().parent.parent

#: Files the cases name, written into a fresh directory for each test.
FIXTURES = {
    "clt_apps.py": (
        "from pomelo_twisted import Application\n"
        "NOT_CALLABLE = 3\n"
        "def returns_int():\n    return 1\n"
        "def raises():\n    raise RuntimeError('boom')\n"
    ),
    "clt_syntax.py": "def make(:\n    pass\n",
    "clt_import_raises.py": "raise RuntimeError('no database')\n",
    "clt_import_missing.py": "import clt_no_such_dependency\n",
    "badjson/dictionary.json": "[\n",
    "badclient/clientProtos.json": "{\n",
    "badproto/serverProtos.json": '{"r": {"required strin x": 1}}\n',
    "junk.pem": "junk\n",
    "blocklist.txt": "192.0.2.1\nnot-an-address\n",
}

#: (arguments, fragments the one line must contain). A path starting with "./" is made
#: absolute in the fixtures directory.
CASES: list[tuple[list[str], list[str]]] = [
    # --app
    (["--app", "clt_no_such_module:make"], ["--app", "no module named 'clt_no_such_module'"]),
    (["--app", "nocolon"], ["--app 'nocolon'", "package.module:factory"]),
    (["--app", ":make"], ["--app ':make'", "package.module:factory"]),
    (["--app", "clt_apps:"], ["--app 'clt_apps:'", "package.module:factory"]),
    (["--app", "clt_apps:missing"], ["--app", "clt_apps has no 'missing'"]),
    (["--app", "clt_apps:NOT_CALLABLE"], ["--app", "not callable"]),
    (["--app", "clt_apps:returns_int"], ["--app", "returned int, not an Application"]),
    (["--app", "clt_apps:raises"], ["--app", "RuntimeError: boom", "clt_apps.py:6"]),
    (["--app", "clt_syntax:make"], ["--app", "SyntaxError", "clt_syntax.py, line 1"]),
    (["--app", "clt_import_raises:make"], ["--app", "RuntimeError: no database"]),
    (["--app", "clt_import_missing:make"], ["--app", "clt_no_such_dependency"]),
    # --config
    (["--config", "./nowhere"], ["--config", "nowhere", "not a directory"]),
    (["--config", "./badjson"], ["--config", "badjson/dictionary.json", "not valid JSON"]),
    (["--config", "./badclient"], ["--config", "badclient/clientProtos.json", "not valid JSON"]),
    (["--config", "./badproto"], ["--config", "badproto/serverProtos.json", "'strin'"]),
    # --listen and --metrics
    (["--listen", "nosuch:1"], ["--listen 'nosuch:1'", "Unknown endpoint type"]),
    (["--listen", "tcp:99999"], ["--listen 'tcp:99999'", "0 to 65535"]),
    (["--listen", "tcp:port"], ["--listen 'tcp:port'", "0 to 65535"]),
    (["--listen", "tcp:-1"], ["--listen 'tcp:-1'", "0 to 65535"]),
    (["--listen", ""], ["--listen ''", "endpoint description"]),
    (["--listen", "tcp:1:bogus=1"], ["--listen 'tcp:1:bogus=1'", "'bogus'"]),
    (["--listen", "ssl:1:privateKey=./missing.pem"], ["--listen", "missing.pem", "No such file"]),
    (["--listen", "ssl:1:privateKey=./junk.pem"], ["--listen", "junk.pem", "key or certificate"]),
    (["--listen"], ["--listen", "requires argument"]),
    (["--metrics", "nosuch:1"], ["--metrics 'nosuch:1'", "Unknown endpoint type"]),
    (["--metrics", "tcp:70000"], ["--metrics 'tcp:70000'", "0 to 65535"]),
    # TLS
    (["--tls-key", "./junk.pem"], ["--tls-key and --tls-cert go together"]),
    (["--tls-key", "./junk.pem", "--tls-cert", "./junk.pem"], ["--tls-key", "junk.pem"]),
    (["--tls-key", "./missing.pem", "--tls-cert", "./junk.pem"], ["--tls-key", "missing.pem"]),
    # numbers
    (["--heartbeat", "1.5"], ["--heartbeat '1.5'", "whole number"]),
    (["--heartbeat", "-1"], ["--heartbeat '-1'", "whole number"]),
    (["--heartbeat", "x"], ["--heartbeat 'x'", "whole number"]),
    (["--heartbeat-timeout", "-1"], ["--heartbeat-timeout '-1'", "seconds"]),
    (["--handshake-timeout", "nan"], ["--handshake-timeout 'nan'", "seconds"]),
    (["--ack-timeout", "inf"], ["--ack-timeout 'inf'", "seconds"]),
    (["--first-byte-timeout", "soon"], ["--first-byte-timeout 'soon'", "seconds"]),
    (["--drain-timeout", "-3"], ["--drain-timeout '-3'", "seconds"]),
    (["--max-package-size", "0"], ["--max-package-size '0'", "between 1 and 16777215"]),
    (["--max-package-size", "16777216"], ["--max-package-size", "between 1 and 16777215"]),
    (["--max-handshake-size", "0"], ["--max-handshake-size '0'", "1 or more"]),
    (["--max-http-head-size", "10"], ["--max-http-head-size '10'", "32 or more"]),
    (["--max-outbound-buffer", "-1"], ["--max-outbound-buffer '-1'", "0 or more"]),
    (["--max-connections", "many"], ["--max-connections 'many'", "whole number"]),
    (["--max-connections-per-ip", "-5"], ["--max-connections-per-ip '-5'", "0 or more"]),
    (["--max-requests-per-second", "-1"], ["--max-requests-per-second '-1'", "per second"]),
    (["--request-burst", "0"], ["--request-burst '0'", "1 or more"]),
    (["--rsa-max-modulus-bits", "256"], ["--rsa-max-modulus-bits '256'", "512 or more"]),
    (["--connection-log-level", "loud"], ["--connection-log-level 'loud'", "debug, info, none"]),
    # the rest
    (["--server-id", ""], ["--server-id", "empty"]),
    (["--server-id", "  "], ["--server-id", "empty"]),
    (["--block", "not-an-address"], ["--block 'not-an-address'"]),
    (["--blocklist-file", "./missing.txt"], ["--blocklist-file", "No such file"]),
    (["--blocklist-file", "./blocklist.txt"], ["--blocklist-file", "blocklist.txt:2"]),
    (["--redis-ca", "./junk.pem"], ["--redis-ca needs --redis"]),
    (["--redis", "redis://127.0.0.1:1/0", "--redis-ca", "./junk.pem"], ["--redis-ca", "rediss://"]),
    (
        ["--redis", "rediss://127.0.0.1:1/0", "--redis-ca", "./junk.pem"],
        ["--redis-ca './junk.pem'", "not a PEM certificate"],
    ),
    (
        ["--redis", "rediss://127.0.0.1:1/0", "--redis-ca", "./missing.pem"],
        ["--redis-ca './missing.pem'", "No such file"],
    ),
    (["--bogus"], ["--bogus", "not recognized"]),
    (["stray"], ["unexpected argument 'stray'"]),
]

#: One case of each kind (each one of CASES), run as the real command.
REAL = [
    ["--app", "clt_no_such_module:make"],
    ["--app", "clt_apps:raises"],
    ["--app", "clt_syntax:make"],
    ["--config", "./badjson"],
    ["--config", "./badproto"],
    ["--listen", "nosuch:1"],
    ["--listen", "tcp:99999"],
    ["--listen", "ssl:1:privateKey=./junk.pem"],
    ["--metrics", "nosuch:1"],
    ["--tls-key", "./junk.pem", "--tls-cert", "./junk.pem"],
    ["--heartbeat", "1.5"],
    ["--heartbeat-timeout", "-1"],
    ["--server-id", ""],
    ["--blocklist-file", "./missing.txt"],
    ["--bogus"],
]

TWISTD = "from twisted.scripts.twistd import run; run()"


class CommandLineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        for name, text in FIXTURES.items():
            path = self.dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        sys.path.insert(0, str(self.dir))
        self.addCleanup(sys.path.remove, str(self.dir))
        self.addCleanup(self.forget_fixture_modules)

    def forget_fixture_modules(self) -> None:
        """The next test's fixture modules are other files: import them afresh."""
        for name in [name for name in sys.modules if name.startswith("clt_")]:
            del sys.modules[name]

    def argv(self, args: list[str]) -> list[str]:
        """C{args} with each "./" path made absolute in the fixtures directory."""
        return [arg.replace("./", f"{self.dir}/") for arg in args]

    def in_process(self, args: list[str]) -> Any:
        """What parsing C{args} as twistd does and building the service exit with, or the
        service built."""
        config = ServerOptions()
        try:
            config.parseOptions(["-n", "--pidfile=", "pomelo-connector", *args])
            return tap.makeService(config.subOptions)
        except SystemExit as e:
            return e

    def check_line(self, args: list[str], line: object, fragments: list[str]) -> str | None:
        """Why C{line} is not the one line C{args} deserve, or None."""
        if not isinstance(line, str):
            return f"{args}: exited with {line!r}, not a message"
        if "\n" in line or not line.startswith("pomelo-connector: "):
            return f"{args}: not one line naming the command: {line!r}"
        missing = [f for f in fragments if f not in line]
        return f"{args}: {line!r} lacks {missing}" if missing else None

    def test_every_mistake_exits_with_one_line(self) -> None:
        problems = []
        for args, fragments in CASES:
            args = self.argv(args)
            result = self.in_process(args)
            if not isinstance(result, SystemExit):
                problems.append(f"{args}: no exit, got {result!r}")
                continue
            problem = self.check_line(args, result.code, self.argv(fragments))
            if problem:
                problems.append(problem)
        self.assertEqual(problems, [])

    def test_real_command(self) -> None:
        """The real twistd command: exit status 1, and its whole output the same one line."""
        env = dict(os.environ, PYTHONPATH=f"{WORKTREE}{os.pathsep}{self.dir}")
        running = []
        cases = [args for args, _ in CASES]
        for args in REAL:
            self.assertIn(args, cases)
            args = self.argv(args)
            command = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "pomelo-connector"]
            process = subprocess.Popen(
                [*command, *args],
                cwd=self.dir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            running.append((args, process))
        problems = []
        for args, process in running:
            output, _ = process.communicate(timeout=120)
            expected = self.in_process(args).code
            if process.returncode != 1:
                problems.append(f"{args}: exit status {process.returncode}")
            if output.decode() != f"{expected}\n":
                problems.append(f"{args}: output {output.decode()!r}, not {expected!r}")
        self.assertEqual(problems, [])

    def test_twist_too(self) -> None:
        """C{python -m twisted pomelo-connector} (twist) says the same in one line."""
        env = dict(os.environ, PYTHONPATH=str(WORKTREE))
        result = subprocess.run(
            [sys.executable, "-m", "twisted", "pomelo-connector", "--heartbeat", "1.5"],
            cwd=self.dir,
            env=env,
            capture_output=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        self.assertEqual(
            result.stderr.decode(),
            "pomelo-connector: --heartbeat '1.5': must be a whole number 0 or more\n",
        )

    def test_port_in_use(self) -> None:
        """Found once twistd logs: its start-up lines, then one line naming the address."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(WORKTREE))
        result = subprocess.run(
            [
                *(sys.executable, "-c", TWISTD, "-n", "--pidfile=", "pomelo-connector"),
                *("--listen", f"tcp:{port}:interface=127.0.0.1"),
            ],
            cwd=self.dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
        self.assertEqual(result.returncode, 1)
        lines = result.stdout.decode().splitlines()
        ours = [line for line in lines if "pomelo-connector:" in line]
        self.assertEqual(len(ours), 1, lines)
        self.assertIn(f"Couldn't listen on 127.0.0.1:{port}", ours[0])
        self.assertIn("Address already in use", ours[0])
        self.assertNotIn("Traceback", result.stdout.decode())
        self.assertEqual([line for line in lines if "twistd" not in line], ours)

    def test_good_command_line(self) -> None:
        """A correct command line builds the service: no exit."""
        service = self.in_process(["--listen", "tcp:0:interface=127.0.0.1"])
        self.assertIsInstance(service, ConnectorService)

    def test_programs_get_usage_errors(self) -> None:
        """Options parsed by a program (not as a twistd subcommand) raise, they do not exit."""
        options = tap.Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["--heartbeat", "1.5"])
        options = tap.Options()
        options.parseOptions(["--app", "clt_apps:returns_int"])
        self.assertRaises(usage.UsageError, tap.makeService, options)
