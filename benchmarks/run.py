#!/usr/bin/env python3
"""Benchmark pomelo-twisted against the reference Pomelo server and the bare-Twisted ceiling.

One command runs the whole comparison:

    python3 benchmarks/run.py            # full run: 3 rounds, 2 s warm-up + 10 s per measurement
    python3 benchmarks/run.py --quick    # validation: 1 round, 1 s warm-up + 2 s (noise only)

What it does:

 1. builds the C load generator (benchmarks/loadgen.c) with gcc -O2 into a scratch folder;
 2. installs the reference Pomelo 2.2.7 server (the demo app in benchmarks/reference/) from
    npm into the scratch folder, moves it to its own ports, and patches its raw-TCP path for
    current Node (pomelo 2.2.7 passes {binary:true} as an encoding to net.Socket.write);
 3. for each round, shape and transport, starts each server in turn - ours
    (``twistd -n pomelo-connector``), Pomelo (``node app.js``: master + connector), the
    ceiling (benchmarks/ceiling.py) - pinned to CPU 0 with taskset, runs the load generator
    pinned to CPU 1, and stops the server;
 4. once per round, holds 10,000 idle connections (handshaken, heartbeating) against each server
    and reads the serving process's RSS before and after;
 5. writes benchmarks/results/<timestamp>.json and .md (medians over rounds and the ratios
    ours / Pomelo and ours / ceiling), prints the Markdown, and draws the plot (matplotlib; it
    is pip-installed into the benchmark Python's environment when missing).

Environment (all optional): TWISTD (default: ``command -v twistd``), BENCH_PYTHON (default: the
python beside TWISTD; runs the ceiling and the plot), NODE, NPM, BENCH_SCRATCH (default
/tmp/pomelo-twisted-bench), BENCH_ROUNDS, BENCH_SECONDS, BENCH_WARMUP, BENCH_IDLE_CONNS,
BENCH_PORT_BASE (default 14000), REF_HEARTBEAT (default 3).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = ("ours", "pomelo", "ceiling")
#: With --baseline REV: that git revision of ours, run side by side with the checkout.
BASELINE = "base"
TRANSPORTS = ("tcp", "ws")
DEFAULT_SHAPES = "100x1,100x10,1000x1"
ROUTE = "connector.entryHandler.entry"
LABEL = {"ours": "pomelo-twisted", "pomelo": "Pomelo 2.2.7", "ceiling": "bare Twisted",
         BASELINE: "pomelo-twisted baseline"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_num(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


# --------------------------------------------------------------------------- setup


def build_loadgen(scratch: Path) -> Path:
    out = scratch / "loadgen"
    src = HERE / "loadgen.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        log(f"building {out}")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(src)], check=True)
    return out


def install_pomelo(scratch: Path, ports: dict[str, int], npm: str) -> Path:
    """Install the reference Pomelo server like shared/reference/setup.sh, on our own ports."""
    home = scratch / "pomelo"
    home.mkdir(parents=True, exist_ok=True)
    ref = HERE / "reference"
    shutil.copy2(ref / "app.js", home / "app.js")
    shutil.copy2(ref / "package.json", home / "package.json")
    for sub in ("app", "config"):
        shutil.rmtree(home / sub, ignore_errors=True)
        shutil.copytree(ref / sub, home / sub)
    # Own ports, so that a reference server started by hand on 13010 does not collide.
    (home / "config" / "master.json").write_text(json.dumps(
        {"development": {"id": "master-server-1", "host": "127.0.0.1", "port": ports["master"]}}))
    (home / "config" / "servers.json").write_text(json.dumps({"development": {"connector": [{
        "id": "connector-server-1", "host": "127.0.0.1", "port": ports["rpc"],
        "clientHost": "127.0.0.1", "clientPort": ports["pomelo"], "frontend": True}]}}))
    levels = json.loads((home / "config" / "log4js.json").read_text())["levels"]
    assert levels["pomelo"] == "WARN", "the reference config must log at WARN"
    if not (home / "node_modules" / "pomelo").is_dir():
        log(f"npm install (pomelo 2.2.7) into {home}")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=home, check=True, stdout=subprocess.DEVNULL)
    # Same patch as shared/reference/setup.sh: Node >= 14 rejects {binary:true} as encoding.
    f = home / "node_modules/pomelo/lib/connectors/hybrid/tcpsocket.js"
    text = f.read_text()
    if 'typeof encode === "string"' not in text:
        old = "  this._socket.write(msg, encode, cb);"
        assert old in text, f"unexpected {f}"
        f.write_text(text.replace(
            old, '  this._socket.write(msg, typeof encode === "string" ? encode : undefined, cb);'))
    (home / "logs").mkdir(exist_ok=True)
    return home


def twistd_sees_plugin(twistd: str, env: dict[str, str]) -> bool:
    r = subprocess.run([twistd, "--help"], env=env, capture_output=True, text=True, cwd="/")
    return "pomelo-connector" in r.stdout


# The connector's admission and rate limits (those that the installed version has) are turned
# off, as Pomelo has none: a 429 answer or a refused connection would measure the limit, not
# the connector. Each is "0: no limit".
OURS_UNLIMITED = (
    "max-connections",
    "max-connections-per-ip",
    "max-requests-per-second",
    "max-requests-per-second-per-ip",
)


def ours_limit_args(twistd: str, env: dict[str, str]) -> list[str]:
    r = subprocess.run([twistd, "pomelo-connector", "--help"], env=env, capture_output=True,
                       text=True, cwd="/")
    args: list[str] = []
    for opt in OURS_UNLIMITED:
        if f"--{opt}" in r.stdout:
            args += [f"--{opt}", "0"]
    return args


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- processes


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def listening_inodes(port: int) -> set[str]:
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes


def pgid_members(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(d.name))
    return pids


def serving_pid(port: int, pgid: int) -> int | None:
    """The process of our group that holds the listening socket (Pomelo: the connector)."""
    wanted = {f"socket:[{i}]" for i in listening_inodes(port)}
    for pid in pgid_members(pgid):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) in wanted:
                        return pid
                except OSError:
                    pass
        except OSError:
            pass
    return None


class Server:
    """One server under test, started in its own process group, pinned to CPU 0."""

    def __init__(self, name: str, transport: str, bench: Bench) -> None:
        self.name = name
        self.transport = transport
        self.bench = bench
        self.port = bench.ports[name]
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        b = self.bench
        env = dict(os.environ)
        if self.name in ("ours", BASELINE):
            env.update(b.ours_env if self.name == "ours" else b.base_env)
            cmd = [b.twistd, "-n", "--pidfile=", "pomelo-connector",
                   "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=511",
                   *(b.ours_args + b.extra_args if self.name == "ours" else b.base_args)]
            cwd = b.scratch / self.name
        elif self.name == "ceiling":
            cmd = [b.python, str(HERE / "ceiling.py"), "--port", str(self.port),
                   "--transport", self.transport, "--heartbeat", "3"]
            cwd = b.scratch / "ceiling"
        else:
            env["REF_HEARTBEAT"] = os.environ.get("REF_HEARTBEAT", "3")
            cmd = [b.node, "app.js", "env=development"]
            cwd = b.pomelo_home
        cwd.mkdir(parents=True, exist_ok=True)
        return ["taskset", "-c", b.server_cpu, *cmd], cwd, env

    def start(self) -> None:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use: a stale server?")
        cmd, cwd, env = self.command()
        logf = open(self.bench.scratch / f"{self.name}-{self.transport}.log", "ab")  # noqa: SIM115
        logf.write(f"\n=== {time.ctime()} {' '.join(cmd)}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see logs")
            if port_open(self.port):
                self.pid = serving_pid(self.port, self.proc.pid)
                if self.pid is not None:
                    time.sleep(0.5)  # let start-up work (imports, GC) settle
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {self.port} within 60 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the group may outlive its leader (Pomelo's connector)
            deadline = time.monotonic() + wait
            while pgid_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not pgid_members(pgid):
                break
        self.proc = None
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scratch = Path(os.environ.get("BENCH_SCRATCH", "/tmp/pomelo-twisted-bench"))
        self.scratch.mkdir(parents=True, exist_ok=True)
        base = int(env_num("BENCH_PORT_BASE", 14000))
        self.ports = {"ours": base + 10, "pomelo": base + 110, "ceiling": base + 210,
                      "master": base + 105, "rpc": base + 150, BASELINE: base + 60}
        self.server_cpu, self.loadgen_cpu = args.cpus.split(",")
        self.twistd = os.environ.get("TWISTD") or shutil.which("twistd") or ""
        if not self.twistd:
            sys.exit("no twistd: activate the project's virtualenv or set TWISTD")
        self.python = os.environ.get("BENCH_PYTHON") or str(Path(self.twistd).parent / "python")
        self.node = os.environ.get("NODE") or shutil.which("node") or "node"
        self.npm = os.environ.get("NPM") or shutil.which("npm") or "npm"
        self.ours_env: dict[str, str] = {}
        self.ours_args: list[str] = []
        self.base_args: list[str] = []
        #: --ours-args: for ours only, not the baseline.
        self.extra_args: list[str] = []
        self.ours_from = "installed"
        self.base_env: dict[str, str] = {}
        self.pomelo_home = self.scratch / "pomelo"
        self.loadgen = self.scratch / "loadgen"
        self.runs: list[dict[str, Any]] = []

    def prepare(self) -> None:
        self.nofile = raise_nofile()
        self.loadgen = build_loadgen(self.scratch)
        if "pomelo" in self.args.servers:
            self.pomelo_home = install_pomelo(self.scratch, self.ports, self.npm)
        if "ours" in self.args.servers and not twistd_sees_plugin(self.twistd, dict(os.environ)):
            # Not installed in this environment: use the checkout (twistd finds
            # twisted/plugins/pomelo_connector.py through sys.path).
            pp = os.environ.get("PYTHONPATH")
            self.ours_env = {"PYTHONPATH": str(ROOT) + (os.pathsep + pp if pp else "")}
            if not twistd_sees_plugin(self.twistd, {**os.environ, **self.ours_env}):
                sys.exit(f"{self.twistd} does not list the pomelo-connector plugin")
            self.ours_from = f"checkout {ROOT} (PYTHONPATH)"
        if "ours" in self.args.servers:
            self.ours_args = ours_limit_args(self.twistd, {**os.environ, **self.ours_env})
            self.extra_args = shlex.split(self.args.ours_args)
        if BASELINE in self.args.servers:
            # The baseline is the same twistd with that revision's tree first on sys.path:
            # the checkout must therefore not be installed in the environment.
            # Keyed by the commit, so that a moving name (HEAD, a branch) is never a stale tree.
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", self.args.baseline],
                                    capture_output=True, text=True, check=True).stdout.strip()
            tree = self.scratch / f"baseline-{commit}"
            if not tree.exists():
                tree.mkdir(parents=True)
                archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                         capture_output=True, check=True).stdout
                subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            self.base_env = {"PYTHONPATH": str(tree)}
            # The limits the baseline knows (an older one lacks newer options).
            self.base_args = ours_limit_args(self.twistd, {**os.environ, **self.base_env})
            if self.ours_from == "installed":
                sys.exit("--baseline needs ours from the checkout: uninstall pomelo-twisted")
        ours = [self.twistd, f"({self.ours_from})", *self.ours_args, *self.extra_args]
        log(f"ours: {' '.join(ours)}; "
            f"ceiling/plot python: {self.python}; "
            f"node: {self.node}; RLIMIT_NOFILE {self.nofile}")

    def loadgen_cmd(self, server: Server, transport: str, conns: int, inflight: int,
                    seconds: float, warmup: float, idle: bool) -> list[str]:
        cmd = ["taskset", "-c", self.loadgen_cpu, str(self.loadgen), "--host", "127.0.0.1",
               "--port", str(server.port), "--transport", transport, "--conns", str(conns),
               "--inflight", str(inflight), "--seconds", str(seconds), "--warmup", str(warmup),
               "--route", ROUTE, "--body", "{}", "--pid", str(server.pid)]
        if idle:
            cmd.append("--idle")
        return cmd

    @staticmethod
    def loadgen_result(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
        if returncode != 0 or not stdout.strip():
            raise RuntimeError(f"loadgen failed ({returncode}): {stderr.strip()}")
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return result

    def loadgen_run(self, server: Server, transport: str, conns: int, inflight: int,
                    seconds: float, warmup: float, idle: bool) -> dict[str, Any]:
        cmd = self.loadgen_cmd(server, transport, conns, inflight, seconds, warmup, idle)
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=loadgen_timeout(conns, seconds, warmup))
        return self.loadgen_result(r.returncode, r.stdout, r.stderr)

    def measure_together(self, rnd: int, transport: str, shape: str) -> None:
        """--concurrent: ours and the baseline at the same moment, both on the server CPU.

        The scheduler gives each about half of that CPU, so both see the same machine noise,
        which on a shared VM moves one server's throughput by a third from second to second;
        their ratio (and the ratio of requests per CPU-second) is what is left.
        """
        c, d = shape.split("x")
        conns, inflight = int(c), int(d)
        names = ("ours", BASELINE) if rnd % 2 else (BASELINE, "ours")  # who starts first
        servers = [Server(name, transport, self) for name in names]
        recs = {name: {"round": rnd, "server": name, "transport": transport, "shape": shape,
                       "concurrent": True} for name in names}
        t0 = time.monotonic()
        procs: list[tuple[str, subprocess.Popen[str]]] = []
        try:
            for server in servers:
                server.start()
                recs[server.name]["server_pid"] = server.pid
            seconds, warmup = self.args.seconds, self.args.warmup
            for server in servers:
                cmd = self.loadgen_cmd(server, transport, conns, inflight, seconds, warmup, False)
                procs.append((server.name, subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            for name, proc in procs:
                out, err = proc.communicate(timeout=loadgen_timeout(conns, seconds, warmup))
                rec = recs[name]
                rec.update(self.loadgen_result(proc.returncode, out, err))
                rec["valid"] = valid_run(rec, conns)
        except Exception as e:  # record it and go on with the other runs
            for rec in recs.values():
                rec["valid"] = False
                rec.setdefault("failure", str(e))
        finally:
            for _, proc in procs:
                if proc.poll() is None:  # a failure left it running
                    proc.kill()
                    proc.wait()
            for server in servers:
                server.stop()
        for name in names:
            rec = recs[name]
            rec["t_total_s"] = round(time.monotonic() - t0, 2)
            self.runs.append(rec)
            flag = "" if rec.get("valid") else (
                f"  INVALID {rec.get('failure', '')} errors={rec.get('errors')}")
            log(f"r{rnd} {name:8} {transport:3} {shape:7} {rec.get('rps', 0):>9.0f} req/s  "
                f"server cpu {rec.get('server_cpu')}  per cpu-s {per_cpu_second(rec):>9.0f}  "
                f"(together){flag}")
        time.sleep(self.args.pause)

    def measure(self, rnd: int, name: str, transport: str, shape: str) -> None:
        idle = shape == "idle"
        if idle:
            conns, inflight = self.args.idle_conns, 1
            seconds, warmup = max(self.args.seconds, self.args.idle_hold), 0.0
        else:
            c, d = shape.split("x")
            conns, inflight = int(c), int(d)
            seconds, warmup = self.args.seconds, self.args.warmup
        server = Server(name, transport, self)
        rec: dict[str, Any] = {"round": rnd, "server": name, "transport": transport,
                                  "shape": shape}
        t0 = time.monotonic()
        try:
            server.start()
            rec["server_pid"] = server.pid
            rec["t_start_s"] = round(time.monotonic() - t0, 2)
            rec.update(self.loadgen_run(server, transport, conns, inflight, seconds, warmup, idle))
            # Noise: CPU time on each pinned CPU that was not the server's / the loadgen's own.
            # (user+system+irq+softirq time on that CPU minus the process's own utime+stime: the
            # tick-based accounting charges the irq/softirq ticks taken while a process runs to
            # that process's stime as well, so this leaves the time of other processes.)
            busy, irq = rec.get("cpu_busy") or [], rec.get("cpu_irq") or []
            steal = rec.get("cpu_steal") or []
            sc, lc = int(self.server_cpu), int(self.loadgen_cpu)
            if sc < min(len(busy), len(irq)) and rec.get("server_cpu") is not None:
                used = busy[sc] + irq[sc]
                rec["other_on_server_cpu"] = round(max(0.0, used - rec["server_cpu"]), 3)
                rec["steal_on_server_cpu"] = steal[sc] if sc < len(steal) else None
            if lc < min(len(busy), len(irq)):
                used = busy[lc] + irq[lc]
                rec["other_on_loadgen_cpu"] = round(max(0.0, used - rec["loadgen_cpu"]), 3)
            rec["valid"] = valid_run(rec, conns)
        except Exception as e:  # record it and go on with the other runs
            rec["valid"] = False
            rec["failure"] = str(e)
        finally:
            t1 = time.monotonic()
            server.stop()
            rec["t_stop_s"] = round(time.monotonic() - t1, 2)
            rec["t_total_s"] = round(time.monotonic() - t0, 2)
        self.runs.append(rec)
        if idle:
            extra = (f"alive {rec.get('alive')}, RSS {rec.get('server_rss_before_kb')} -> "
                     f"{rec.get('server_rss_after_kb')} kB")
        else:
            extra = (f"{rec.get('rps', 0):>9.0f} req/s  p50 {rec.get('p50_us')} us  "
                     f"p99 {rec.get('p99_us')} us  server cpu {rec.get('server_cpu')}  "
                     f"loadgen cpu {rec.get('loadgen_cpu')}  other load on server cpu "
                     f"{rec.get('other_on_server_cpu')} (steal {rec.get('steal_on_server_cpu')})")
        flag = "" if rec["valid"] else (
            f"  INVALID {rec.get('failure', '')} errors={rec.get('errors')}")
        log(f"r{rnd} {name:8} {transport:3} {shape:7} {extra}{flag}")
        time.sleep(self.args.pause)


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r.get("valid"):
            groups.setdefault(f"{r['server']}/{r['transport']}/{r['shape']}", []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for key, rs in groups.items():
        s: dict[str, Any] = {"n": len(rs)}
        for field in ("rps", "p50_us", "p99_us", "p999_us", "server_cpu", "loadgen_cpu",
                      "server_rss_before_kb", "server_rss_after_kb", "alive",
                      "other_on_server_cpu", "steal_on_server_cpu", "other_on_loadgen_cpu"):
            vals = [float(r[field]) for r in rs if r.get(field) is not None]
            s[field] = median(vals)
        if rs[0]["shape"] == "idle":
            per = [(float(r["server_rss_after_kb"]) - float(r["server_rss_before_kb"])) * 1024
                   / max(1, int(r["alive"])) for r in rs]
            s["bytes_per_conn"] = median(per)
        out[key] = s
    return out


def loadgen_timeout(conns: int, seconds: float, warmup: float) -> float:
    """How long a load generator run may take before it counts as hung."""
    return 120 + warmup + seconds + conns / 100


def valid_run(rec: dict[str, Any], conns: int) -> bool:
    """Every connection alive at the end and nothing gone wrong (the medians take no other)."""
    return bool(rec["alive"] == conns and rec["errors"] == 0)


def per_cpu_second(rec: dict[str, Any]) -> float:
    """Requests per second of the server's own CPU time."""
    cpu = float(rec.get("server_cpu") or 0)
    return float(rec.get("rps") or 0) / cpu if cpu > 0 else 0.0


def paired_ratios(runs: list[dict[str, Any]], field: str = "rps") -> dict[str, list[float]]:
    """ours/base per round, by transport/shape, of req/s (field "rps") or of requests per
    server CPU-second ("per_cpu"): the two ran back to back (or together, --concurrent) in each
    round, so a ratio of one round shares that moment's machine noise, which on this VM moves
    whole rounds by a third."""
    by_round: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in runs:
        if r.get("valid") and r["shape"] != "idle" and r["server"] in ("ours", BASELINE):
            value = per_cpu_second(r) if field == "per_cpu" else float(r[field])
            by_round.setdefault((r["transport"], r["shape"], r["round"]), {})[r["server"]] = value
    out: dict[str, list[float]] = {}
    for (t, shape, _), pair in sorted(by_round.items()):
        if len(pair) == 2 and pair[BASELINE]:
            out.setdefault(f"{t}/{shape}", []).append(pair["ours"] / pair[BASELINE])
    return out


def fmt_num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{float(v):,.{digits}f}"


def fmt_ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{float(a) / float(b):.2f}"


def fmt_ms(us: Any) -> str:
    return "-" if us is None else f"{float(us) / 1000:.2f}"


def markdown(summary: dict[str, dict[str, Any]], shapes: list[str], transports: list[str],
             meta: dict[str, Any]) -> str:
    def g(server: str, t: str, shape: str, field: str) -> object:
        return summary.get(f"{server}/{t}/{shape}", {}).get(field)

    lines = [
        f"Run {meta['started']}: {meta['rounds']} round(s), warm-up {meta['warmup']} s + "
        f"{meta['seconds']} s per measurement, medians over rounds. "
        f"Servers on CPU {meta['server_cpu']}, load generator on CPU {meta['loadgen_cpu']}."
        + (" **Quick run: validation only, not results.**" if meta.get("quick") else ""),
        "",
        "| transport | conns x in flight | ours req/s | Pomelo req/s | ceiling req/s "
        "| ours / Pomelo | ours / ceiling | p99 ours ms | p99 Pomelo ms | p99 ceiling ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for t in transports:
        for shape in shapes:
            o, p, c = (g(s, t, shape, "rps") for s in SERVERS)
            lines.append(
                f"| {t.upper() if t == 'tcp' else 'WebSocket'} | {shape.replace('x', ' x ')} "
                f"| {fmt_num(o)} | {fmt_num(p)} | {fmt_num(c)} | {fmt_ratio(o, p)} "
                f"| {fmt_ratio(o, c)} | {fmt_ms(g('ours', t, shape, 'p99_us'))} "
                f"| {fmt_ms(g('pomelo', t, shape, 'p99_us'))} "
                f"| {fmt_ms(g('ceiling', t, shape, 'p99_us'))} |")
    lines += [
        "",
        "Server and load-generator CPU (fraction of one core over the measurement window; "
        "the server should be near 1.00 and the load generator well below it):",
        "",
        "| transport | conns x in flight | ours | Pomelo | ceiling "
        "| loadgen (vs ours / Pomelo / ceiling) | other load on the server's CPU (same order) |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for t in transports:
        for shape in shapes:
            cpu = [fmt_num(g(s, t, shape, "server_cpu"), 2) for s in SERVERS]
            lg = " / ".join(fmt_num(g(s, t, shape, "loadgen_cpu"), 2) for s in SERVERS)
            other = " / ".join(fmt_num(g(s, t, shape, "other_on_server_cpu"), 2) for s in SERVERS)
            lines.append(f"| {t} | {shape.replace('x', ' x ')} | {' | '.join(cpu)} | {lg} "
                         f"| {other} |")
    lines += ["", "(\"Other load\": CPU time on the server's CPU that was not the server "
              "process's own - other processes, or Pomelo's master. Above ~0.05 the machine was "
              "not quiet.)"]
    if any(k.endswith("/idle") for k in summary):
        lines += [
            "",
            f"Idle connections ({meta['idle_conns']:,}, handshaken and heartbeating; RSS of the "
            "process holding the sockets - for Pomelo its connector process):",
            "",
            "| transport | server | alive | RSS before MB | RSS after MB | growth per connection |",
            "|---|---|--:|--:|--:|--:|",
        ]
        for t in transports:
            for s in SERVERS:
                row = summary.get(f"{s}/{t}/idle")
                if not row:
                    continue
                before, after = row["server_rss_before_kb"], row["server_rss_after_kb"]
                lines.append(
                    f"| {t} | {LABEL[s]} | {fmt_num(row['alive'])} "
                    f"| {fmt_num(float(before) / 1024, 1)} | {fmt_num(float(after) / 1024, 1)} "
                    f"| {fmt_num(float(row['bytes_per_conn']) / 1024, 1)} KiB |")
        lines.append("")
        for t in transports:
            o, p = g("ours", t, "idle", "bytes_per_conn"), g("pomelo", t, "idle", "bytes_per_conn")
            if o is not None and p is not None:
                lines.append(f"Memory per idle {t} connection, ours / Pomelo: {fmt_ratio(o, p)}.")
    if any(k.startswith(f"{BASELINE}/") for k in summary):
        together = (" Measured together (--concurrent): both servers at the same moment on the "
                    "server CPU, each given about half of it by the scheduler, so req/s are "
                    "about half of a serial run's.") if meta.get("concurrent") else ""
        lines += ["", f"Before and after: ours at the checkout vs ours at {meta.get('baseline')}."
                  f"{together} Per-round ratios are after / before within one round "
                  "(median in bold):",
                  "", "| transport | shape | after req/s | before req/s | after / before "
                  "| per-round req/s ratios | per-round ratios of req per CPU-second "
                  "| p99 after ms | p99 before ms |",
                  "|---|---|--:|--:|--:|--|--|--:|--:|"]
        pairs = meta.get("paired_ratios") or {}
        per_cpu = meta.get("paired_ratios_per_cpu") or {}

        def listed(ratios: list[float]) -> str:
            return (" ".join(f"{x:.2f}" for x in ratios)
                    + (f" (**{median(ratios):.3f}**)" if ratios else ""))

        for t in transports:
            for shape in [*shapes, "idle"]:
                field = "bytes_per_conn" if shape == "idle" else "rps"
                a, b = g("ours", t, shape, field), g(BASELINE, t, shape, field)
                if a is None or b is None:
                    continue
                if shape == "idle":
                    lines.append(f"| {t} | idle, KiB/conn | {fmt_num(float(a) / 1024, 1)} "
                                 f"| {fmt_num(float(b) / 1024, 1)} | {fmt_ratio(a, b)} | - | - "
                                 "| - | - |")
                    continue
                key = f"{t}/{shape}"
                lines.append(f"| {t} | {shape} | {fmt_num(a)} | {fmt_num(b)} | {fmt_ratio(a, b)} "
                             f"| {listed(pairs.get(key, []))} | {listed(per_cpu.get(key, []))} "
                             f"| {fmt_ms(g('ours', t, shape, 'p99_us'))} "
                             f"| {fmt_ms(g(BASELINE, t, shape, 'p99_us'))} |")
    invalid = meta.get("invalid_runs") or []
    if invalid:
        lines += ["", f"**{len(invalid)} run(s) were invalid** (connections lost, errors or a "
                  "failed start) and are left out of the medians:", ""]
        lines += [f"- {x}" for x in invalid]
    return "\n".join(lines) + "\n"


def machine_info(bench: Bench) -> dict[str, Any]:
    def cmd_out(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return r.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model, virtual = "", False
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and " hypervisor" in line:
            virtual = True
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions = cmd_out([bench.python, "-c",
                        "import twisted, autobahn, sys; print(sys.version.split()[0], "
                        "twisted.__version__, autobahn.__version__)"]).split()
    ours = ""
    if "ours" in bench.args.servers:
        ours_python = str(Path(bench.twistd).parent / "python")
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            ours = subprocess.run(
                [ours_python, "-c", "import pomelo_twisted as p; print(p.__version__, p.__file__)"],
                capture_output=True, text=True, timeout=30, env={**os.environ, **bench.ours_env},
                cwd="/").stdout.strip()
    pomelo_version = ""
    pj = bench.pomelo_home / "node_modules" / "pomelo" / "package.json"
    if pj.exists():
        pomelo_version = json.loads(pj.read_text())["version"]
    return {
        "cpu_model": model,
        "virtual_machine": virtual,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "python": versions[0] if versions else "",
        "twisted": versions[1] if len(versions) > 1 else "",
        "autobahn": versions[2] if len(versions) > 2 else "",
        "node": cmd_out([bench.node, "--version"]),
        "pomelo": pomelo_version,
        "gcc": cmd_out(["gcc", "-dumpfullversion"]),
        "checkout_commit": cmd_out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "ours_from": bench.ours_from,
        "ours_version_and_path": ours,
        "load_average": os.getloadavg(),
    }


def make_plot(bench: Bench, results: Path, png: Path) -> None:
    check = subprocess.run([bench.python, "-c", "import matplotlib"], capture_output=True)
    if check.returncode != 0:
        log(f"installing matplotlib into {bench.python}'s environment")
        r = subprocess.run([bench.python, "-m", "pip", "install", "--quiet", "matplotlib"])
        if r.returncode != 0:
            log("matplotlib unavailable: no plot")
            return
    r = subprocess.run([bench.python, str(HERE / "plot.py"), str(results), str(png)])
    if r.returncode == 0:
        log(f"plot: {png}")


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description="Run the pomelo-twisted benchmark comparison.")
    p.add_argument("--quick", action="store_true",
                   help="validation run: 1 round, 1 s warm-up + 2 s, idle shape once")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--warmup", type=float, default=None)
    p.add_argument("--shapes", default=DEFAULT_SHAPES,
                   help=f"comma-separated CONNSxINFLIGHT (default {DEFAULT_SHAPES})")
    p.add_argument("--transports", default="tcp,ws")
    p.add_argument("--servers", default="ours,pomelo,ceiling")
    p.add_argument("--idle-conns", type=int, default=None,
                   help="idle-memory shape size (default 10000; 0 skips it)")
    p.add_argument("--idle-hold", type=float, default=10.0,
                   help="seconds to hold the idle connections (at least 3 heartbeats)")
    p.add_argument("--idle-rounds", type=int, default=None,
                   help="rounds that include the idle shape (default: all; --quick: 1)")
    p.add_argument("--idle-servers", default=None, help="default: --servers")
    p.add_argument("--cpus", default="0,1", help="SERVER_CPU,LOADGEN_CPU (default 0,1)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--plot", default=None,
                   help="plot file (default docs/performance.png; --quick: next to the results)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--ours-args", default="", metavar="ARGS",
                   help="extra pomelo-connector options for ours only (shell words), e.g. "
                        "'--redis redis://127.0.0.1:6379/0': with --baseline HEAD, the cost of "
                        "an option side by side")
    p.add_argument("--baseline", default=None, metavar="REV",
                   help="also run git revision REV of ours as server 'base' (before/after)")
    p.add_argument("--concurrent", action="store_true",
                   help="with --baseline: run ours and the baseline at the same moment, both on "
                        "the server CPU, instead of one after the other (their ratio then shares "
                        "the machine's noise; see docs/performance.md)")
    a = p.parse_args()
    if a.concurrent and not a.baseline:
        p.error("--concurrent needs --baseline")
    if a.quick:
        a.rounds = a.rounds or 1
        a.seconds = a.seconds or 2.0
        a.warmup = a.warmup if a.warmup is not None else 1.0
        a.idle_rounds = a.idle_rounds if a.idle_rounds is not None else 1
    a.rounds = a.rounds or int(env_num("BENCH_ROUNDS", 3))
    a.seconds = a.seconds or env_num("BENCH_SECONDS", 10.0)
    a.warmup = a.warmup if a.warmup is not None else env_num("BENCH_WARMUP", 2.0)
    a.idle_conns = (a.idle_conns if a.idle_conns is not None
                    else int(env_num("BENCH_IDLE_CONNS", 10000)))
    a.idle_rounds = a.idle_rounds if a.idle_rounds is not None else a.rounds
    a.servers = [s for s in a.servers.split(",") if s]
    a.idle_servers = [s for s in (a.idle_servers or ",".join(a.servers)).split(",") if s]
    transports = [t for t in a.transports.split(",") if t]
    shapes = [s for s in a.shapes.split(",") if s]
    if a.baseline and BASELINE not in a.servers:
        a.servers.append(BASELINE)
    for s in a.servers + a.idle_servers:
        if s not in (*SERVERS, BASELINE) or (s == BASELINE and not a.baseline):
            p.error(f"unknown server {s!r}")
    for t in transports:
        if t not in TRANSPORTS:
            p.error(f"unknown transport {t!r}")

    bench = Bench(a)
    bench.prepare()
    started = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")

    per_run = a.warmup + a.seconds + 3 + a.pause
    per_shape = len(a.servers) - (1 if a.concurrent else 0)  # together: one run for two
    n_load = a.rounds * len(shapes) * len(transports) * per_shape
    n_idle = (a.idle_rounds * len(transports) * len(a.idle_servers)) if a.idle_conns else 0
    est = n_load * per_run + n_idle * (max(a.seconds, a.idle_hold) + a.idle_conns / 1000 + 5)
    log(f"{n_load} load runs + {n_idle} idle runs, about {est / 60:.0f} min")

    for rnd in range(1, a.rounds + 1):
        for shape in shapes:
            for t in transports:
                alone = a.servers
                if a.concurrent:
                    bench.measure_together(rnd, t, shape)
                    alone = [s for s in a.servers if s not in ("ours", BASELINE)]
                for name in alone:
                    bench.measure(rnd, name, t, shape)
        if a.idle_conns and rnd <= a.idle_rounds:
            for t in transports:
                for name in a.idle_servers:
                    bench.measure(rnd, name, t, "idle")

    summary = summarize(bench.runs)
    invalid = [f"r{r['round']} {r['server']} {r['transport']} {r['shape']}: "
               f"{r.get('failure') or ''} alive={r.get('alive')} errors={r.get('errors')}"
               for r in bench.runs if not r.get("valid")]
    meta: dict[str, Any] = {
        "started": started, "quick": a.quick, "rounds": a.rounds, "seconds": a.seconds,
        "warmup": a.warmup, "shapes": shapes, "transports": transports, "servers": a.servers,
        "idle_conns": a.idle_conns, "baseline": a.baseline, "concurrent": a.concurrent,
        "idle_hold": max(a.seconds, a.idle_hold),
        "server_cpu": bench.server_cpu, "loadgen_cpu": bench.loadgen_cpu,
        "ports": bench.ports, "invalid_runs": invalid, "argv": sys.argv[1:],
        "ours_command": ["twistd", "-n", "--pidfile=", "pomelo-connector", "--listen",
                         f"tcp:{bench.ports['ours']}:interface=127.0.0.1:backlog=511",
                         *bench.ours_args, *bench.extra_args],
    }
    meta["paired_ratios"] = paired_ratios(bench.runs)
    meta["paired_ratios_per_cpu"] = paired_ratios(bench.runs, "per_cpu")
    meta["machine"] = machine_info(bench)
    md = markdown(summary, shapes, transports, meta)
    outdir = HERE / "results"
    outdir.mkdir(exist_ok=True)
    res = outdir / f"{started}{'-quick' if a.quick else ''}.json"
    res.write_text(json.dumps({"meta": meta, "summary": summary, "runs": bench.runs}, indent=1))
    res.with_suffix(".md").write_text(md)
    print(md)
    log(f"results: {res} and {res.with_suffix('.md')}")
    if not a.no_plot:
        png = Path(a.plot) if a.plot else (
            res.with_suffix(".png") if a.quick else ROOT / "docs" / "performance.png")
        make_plot(bench, res, png)


if __name__ == "__main__":
    main()
