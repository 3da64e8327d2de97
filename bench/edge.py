"""Benchmark: the openpod edge (HAProxy routing by a Host → pod map) against nginx doing the
same job with `map $host`, and against no proxy at all.

Run `python -m bench.edge` (needs haproxy, nginx and wrk; about 2.5 minutes); it replaces its own
section of bench/RESULTS.md. Every number is set beside references measured in the same run, on
the same machine, against the same upstream, interleaved round by round so that the noise of a
shared 2-core host falls on all of them alike:

- the upstream: one nginx answering `GET /small` with `return 200` (a 24-byte body) and
  `GET /1m` with a 1 MiB static file (sendfile). "direct" is wrk straight to it: the ceiling;
- the edge: `EdgeProxy` started as the product starts it (haproxy.cfg from `render_config`),
  its map holding 10 or 10,000 routes, every one to the upstream; wrk's Host is the middle
  entry of the map. At 10,000 routes it also runs with `splice_responses=False`: the config
  before this benchmark's tuning, measured beside the tuned one;
- the reference: nginx with a `map $host` of the same hosts, each naming one `upstream` group
  that keeps connections alive (a hash lookup: the usual way to do this with nginx).

Fair comparison: as many nginx workers as HAProxy runs threads (read back from HAProxy),
keepalive to the upstream on both (HAProxy `http-reuse always`, checked by its connect/reuse
counters; nginx `keepalive 64` over HTTP/1.1), no access log on either, both set the
X-Forwarded-For/-Proto/-Host headers. nginx gets 64 KiB proxy buffers: with its defaults
(4 KiB pages, a temp file past 32 KiB) it moves 1 MiB bodies ~3x slower, which would flatter
the edge. Every server runs in its own session, as `EdgeProxy` starts HAProxy: with the kernel's
autogroup scheduling (on in Debian) a session is one CPU group, so a proxy left in wrk's
session would get a different share of the 2 cores than one in its own (measured here: the
same haproxy.cfg served 10-20% fewer requests/s in wrk's session than in its own). A public pod's request
runs 7 http-request rules at the edge; a private pod's token and cookie checks sit in a backend
of their own that public pods never enter.

Measured with wrk (2 threads, 64 connections, 3 s after a 1 s warm-up, `--latency`), 5 runs
per target for small bodies and 3 for 1 MiB ones, medians reported: requests/s and p99 latency
for small bodies; MB/s of body for 1 MiB responses; and the proxy's own CPU time per request
(user + system, from /proc), which a contended host disturbs less than requests/s.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import stop_cleanly_on_sigterm
from bench.results import write_section
from openpod.adapters.edge import EdgeProxy, EdgeSettings, Route
from openpod.adapters.edge.runtime_api import AdminSocket
from tests.support.net import free_port, port_open

HEADING = "## Edge proxy: openpod edge (HAProxy) vs nginx"
DOMAIN = "proxy.localhost"
ROUTE_COUNTS = (10, 10_000)
ROUNDS = {"/small": 9, "/1m": 3}  # runs per target, interleaved
DURATION_S = 3
WARMUP_S = 1
CONNECTIONS = 64
WRK_THREADS = 2
SMALL_BODY = "hello from the upstream\n"
BIG_BODY = 1 << 20  # bytes
NGINX_BUFFERS = "proxy_buffer_size 64k; proxy_buffers 8 64k; proxy_busy_buffers_size 128k;"
# What `splice_responses` puts in haproxy.cfg (the tuning measured here, on by default).
TUNINGS = ("option splice-response",)


# --- wrk -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    rps: float
    p99_ms: float
    cpu_us: float  # the proxy's CPU time per request (0 for direct)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(port: int, host: str, path: str, seconds: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, requests) of one wrk run; fails on any error or non-2xx answer."""
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    argv += ["-H", f"Host: {host}", f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    text = out.stdout
    if "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk saw errors against port {port}:\n{text}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    count = re.search(r"(\d+) requests in", text)
    if rps is None or p99 is None or count is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    return float(rps[1]), float(p99[1]) * _UNITS[p99[2]], int(count[1])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads) so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """Somewhere wrk sends requests: a port, the Host to name, whose CPU to count."""

    name: str
    port: int
    host: str
    pids: Callable[[], list[int]] = list
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def check(self, path: str, expect: Callable[[bytes], bool]) -> None:
        """One request by hand first: a 404 or an error page would make a fast, wrong run."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": self.host})
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
        if answer.status != 200 or not expect(body):
            raise RuntimeError(f"{self.name}: GET {path} answered {answer.status}, {body[:200]!r}")

    def measure(self, path: str) -> None:
        pids = self.pids()
        before = cpu_seconds(pids)
        rps, p99, count = wrk(self.port, self.host, path, DURATION_S)
        cpu_us = (cpu_seconds(pids) - before) / count * 1e6 if pids else 0.0
        self.runs.setdefault(path, []).append(Run(rps, p99, cpu_us))

    def median(self, path: str, what: str) -> float:
        return float(statistics.median(getattr(run, what) for run in self.runs[path]))

    def paired(self, path: str, reference: Target) -> list[float]:
        """This target's requests/s over the reference's, round by round (sorted): each pair
        ran within seconds of each other, so a slow spell of the host falls on both."""
        pairs = zip(self.runs[path], reference.runs[path], strict=True)
        return sorted(mine.rps / theirs.rps for mine, theirs in pairs)


def measure(targets: list[Target], path: str, expect: Callable[[bytes], bool]) -> None:
    """Check each target, warm it up, then ROUNDS[path] runs each, interleaved; every other
    round runs the targets in reverse, so that no target always follows the same one."""
    for target in targets:
        target.check(path, expect)
        wrk(target.port, target.host, path, WARMUP_S)
    for round_ in range(ROUNDS[path]):
        for target in targets if round_ % 2 == 0 else targets[::-1]:
            target.measure(path)
            print(f"  {path} {target.name}: {target.runs[path][-1]}", flush=True)


# --- nginx ---------------------------------------------------------------------------------


class Nginx:
    """An nginx of our own: its config, pid file, logs and temp dirs in `home`; stopped by PID
    (the master, then any worker it left behind)."""

    def __init__(self, home: Path, workers: int, http_body: str) -> None:
        self.home = home
        home.mkdir(parents=True)
        temp = " ".join(
            f"{kind}_temp_path {home / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers read files in our 0700 dir
        self.config = home / "nginx.conf"
        self.config.write_text(
            f"{user}worker_processes {workers};\npid {home / 'nginx.pid'};\n"
            f"error_log {home / 'error.log'} warn;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\n  access_log off;\n  keepalive_requests 1000000;\n  {temp}\n"
            f"{http_body}\n}}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        argv = ["nginx", "-c", str(self.config), "-p", str(self.home)]
        argv += ["-e", str(self.home / "error.log"), "-g", "daemon off;"]
        # Its own session, as the edge runs: with autogroup scheduling (Debian's default) a
        # session is one scheduling group, and a proxy sharing wrk's would be favoured.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not port_open(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.home / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nginx did not start on port {port}:\n{log}")
            time.sleep(0.02)

    def workers(self) -> list[int]:
        if self.proc is None:
            return []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = self.workers()
        self.proc.terminate()  # fast shutdown: the master stops its workers
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def upstream_body(port: int, big_file: Path) -> str:
    return (
        "  sendfile on;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        f'    location = /small {{ default_type text/plain; return 200 "{SMALL_BODY.strip()}\\n"; }}\n'
        f"    location = /1m {{ default_type application/octet-stream; alias {big_file}; }}\n"
        "  }"
    )


def proxy_body(port: int, hosts: list[str], upstream_port: int) -> str:
    entries = "\n".join(f"    {host} pods;" for host in hosts)
    return (
        f"  map_hash_max_size {max(1024, 2 * len(hosts))};\n  map_hash_bucket_size 128;\n"
        f'  map $host $pod {{\n    default "";\n{entries}\n  }}\n'
        f"  upstream pods {{\n    server 127.0.0.1:{upstream_port};\n"
        "    keepalive 64;\n    keepalive_requests 1000000;\n  }\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n"
        '      if ($pod = "") { return 404; }\n'
        "      proxy_pass http://$pod;\n"
        '      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
        "      proxy_set_header Host $http_host;\n"
        "      proxy_set_header X-Forwarded-For $remote_addr;\n"
        "      proxy_set_header X-Forwarded-Proto $scheme;\n"
        "      proxy_set_header X-Forwarded-Host $http_host;\n"
        f"      {NGINX_BUFFERS}\n"
        "    }\n  }"
    )


# --- the edge ------------------------------------------------------------------------------


def pod_hosts(count: int) -> list[str]:
    """`{pod id}-8888.{domain}` hosts as the platform makes them, sorted as the map is."""
    ids = (hashlib.sha256(str(i).encode()).hexdigest()[:12] for i in range(count))
    return sorted(f"{pod}-8888.{DOMAIN}" for pod in ids)


def start_edge(state_dir: Path, hosts: list[str], upstream: str, splice: bool) -> EdgeProxy:
    edge = EdgeProxy(
        EdgeSettings(
            state_dir=state_dir, http_port=free_port(), domain=DOMAIN, splice_responses=splice
        )
    )
    edge.set_routes(Route(host, upstream) for host in hosts)  # the map file HAProxy loads
    edge.start()
    return edge


def haproxy_info(edge: EdgeProxy, key: str) -> str:
    for line in AdminSocket(edge.paths.admin_socket).execute("show info").splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    raise RuntimeError(f"HAProxy's `show info` has no {key}")


def upstream_reuse(edge: EdgeProxy) -> tuple[int, int]:
    """(connections opened, connections reused) by the edge's backend, from `show stat`."""
    lines = AdminSocket(edge.paths.admin_socket).execute("show stat").splitlines()
    names = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(names, line.split(","), strict=False))
        if row.get("pxname") == "pods" and row.get("svname") == "BACKEND":
            return int(row["connect"] or 0), int(row["reuse"] or 0)
    raise RuntimeError("HAProxy's `show stat` has no pods backend")


def version(argv: list[str], pattern: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = re.search(pattern, out.stdout + out.stderr)
    return found[1] if found else "?"


# --- the run -------------------------------------------------------------------------------


@dataclass
class Results:
    workers: int  # HAProxy's threads, and so nginx's workers
    direct: Target
    edge: dict[int, Target]  # by route count
    nginx: dict[int, Target]
    untuned: Target  # the edge without its tuning, at the largest route count
    reuse: tuple[int, int]  # the tuned edge's upstream connections: opened, reused


def run(root: Path) -> Results:
    big_file = root / "1m.bin"
    big_file.write_bytes(os.urandom(BIG_BODY))
    big_file.chmod(0o644)
    up_port, top = free_port(), max(ROUTE_COUNTS)
    upstream = f"127.0.0.1:{up_port}"
    nginxes: list[Nginx] = []
    edges: dict[str, EdgeProxy] = {}
    try:
        nginxes.append(Nginx(root / "upstream", 2, upstream_body(up_port, big_file)))
        nginxes[-1].start(up_port)
        direct = Target("direct", up_port, "upstream.localhost")
        edge_targets: dict[int, Target] = {}
        nginx_targets: dict[int, Target] = {}
        untuned: Target | None = None
        for count in ROUTE_COUNTS:
            hosts = pod_hosts(count)
            middle = hosts[len(hosts) // 2]
            variants = {f"edge, {count:,} routes": True}
            if count == top:
                variants[f"edge untuned, {count:,} routes"] = False
            for name, splice in variants.items():
                edge = start_edge(root / f"edge{len(edges)}", hosts, upstream, splice)
                edges[name] = edge
                target = Target(name, edge.settings.http_port, middle, _pid_of(edge))
                if splice:
                    edge_targets[count] = target
                else:
                    untuned = target
            workers = int(haproxy_info(edges[f"edge, {count:,} routes"], "Nbthread"))
            port = free_port()
            nginxes.append(Nginx(root / f"nginx{count}", workers, proxy_body(port, hosts, up_port)))
            nginxes[-1].start(port)
            nginx_targets[count] = Target(
                f"nginx, {count:,} routes", port, middle, nginxes[-1].workers
            )
        assert untuned is not None
        small = [direct]
        for count in ROUTE_COUNTS:
            small += [edge_targets[count], nginx_targets[count]]
        small.append(untuned)
        print(f"small bodies, {ROUNDS['/small']} rounds:", flush=True)
        measure(small, "/small", lambda body: body == SMALL_BODY.encode())
        print(f"1 MiB bodies, {ROUNDS['/1m']} rounds:", flush=True)
        big = [direct, nginx_targets[top], edge_targets[top], untuned]
        measure(big, "/1m", lambda body: len(body) == BIG_BODY)
        reuse = upstream_reuse(edges[f"edge, {top:,} routes"])
    finally:
        for edge in edges.values():
            edge.stop()
        for nginx in nginxes:
            nginx.stop()
    return Results(workers, direct, edge_targets, nginx_targets, untuned, reuse)


def _pid_of(edge: EdgeProxy) -> Callable[[], list[int]]:
    def pids() -> list[int]:
        pid = edge.pid
        return [] if pid is None else [pid]

    return pids


def report(results: Results) -> str:
    top = max(ROUTE_COUNTS)
    direct, untuned = results.direct, results.untuned
    edge_top, nginx_top = results.edge[top], results.nginx[top]

    def cpu(target: Target, path: str) -> str:
        value = target.median(path, "cpu_us")
        return f"{value:.1f}" if value else ""

    def small_row(target: Target, reference: Target | None) -> str:
        rps = target.median("/small", "rps")
        ratio = spread = ""
        if reference is not None:
            pairs = target.paired("/small", reference)
            ratio, spread = f"{statistics.median(pairs):.2f}x", f"{pairs[0]:.2f}-{pairs[-1]:.2f}"
        p99 = target.median("/small", "p99_ms")
        cells = [target.name, f"{rps:,.0f}", f"{p99:.2f} ms", cpu(target, "/small"), ratio, spread]
        return "| " + " | ".join(cells) + " |"

    def mbps(target: Target) -> float:
        return target.median("/1m", "rps") * BIG_BODY / 1e6

    def big_row(target: Target) -> str:
        ratio = "" if target is direct else f"{mbps(target) / mbps(nginx_top):.2f}x"
        p99 = target.median("/1m", "p99_ms")
        return f"| {target.name} | {mbps(target):,.0f} | {p99:.1f} ms | {cpu(target, '/1m')} | {ratio} |"

    small_rows = [small_row(direct, None)]
    for count in ROUTE_COUNTS:
        small_rows.append(small_row(results.edge[count], results.nginx[count]))
        small_rows.append(small_row(results.nginx[count], None))
    small_rows.append(small_row(untuned, nginx_top))
    big_rows = [big_row(t) for t in (direct, nginx_top, edge_top, untuned)]
    top_pairs = edge_top.paired("/small", nginx_top)
    small_ratio = statistics.median(top_pairs)
    below = sum(1 for ratio in top_pairs if ratio < 0.9)
    cpu_ratio = nginx_top.median("/small", "cpu_us") / edge_top.median("/small", "cpu_us")
    connects, reuses = results.reuse
    haproxy = version(["haproxy", "-v"], r"version (\S+)")
    nginx = version(["nginx", "-v"], r"nginx/(\S+)")
    w = results.workers
    lines = [
        f"{HEADING} ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
        f"HAProxy {haproxy}, nginx {nginx})",
        "",
        "`python -m bench.edge`. One upstream for every row: an nginx (2 workers) answering "
        f"`return 200` with a {len(SMALL_BODY)}-byte body, or a 1 MiB static file. "
        "The edge is `EdgeProxy` with its own haproxy.cfg; the reference is nginx with a "
        "`map $host` of the same hosts naming one keepalive `upstream`. "
        f"{w} HAProxy threads = {w} nginx workers; keepalive to the upstream on both "
        f"(edge: {connects:,} upstream connections opened, {reuses:,} reused); no access "
        "logs; both set X-Forwarded-*; nginx with 64 KiB proxy buffers. wrk: "
        f"{WRK_THREADS} threads, {CONNECTIONS} connections, {DURATION_S} s runs after a "
        f"{WARMUP_S} s warm-up, {ROUNDS['/small']} runs per row (small) or {ROUNDS['/1m']} "
        "(1 MiB) interleaved (every other round in reverse order), medians; the Host is the "
        "middle entry of the map. CPU = the proxy's user+system time per request.",
        "",
        "Small responses:",
        "",
        "| target | requests/s | p99 | proxy CPU µs/req | vs nginx (same routes), median of "
        "rounds | rounds' range |",
        "|---|---|---|---|---|---|",
        *small_rows,
        "",
        f"Edge / nginx at {top:,} routes: **{small_ratio:.2f}x** requests/s (target ≥ 0.9x), "
        "the median of the rounds' ratios (each round runs the edge and nginx back to back, "
        f"so a slow spell of this shared host falls on both); {below} of {len(top_pairs)} "
        "rounds below 0.9x. "
        f"CPU per request, nginx / edge: {cpu_ratio:.2f}x. Direct (no proxy) is the ceiling. "
        "A public pod's request runs the map lookup, the 404 check, X-Forwarded-* and set-dst "
        "(the private-pod token checks live in a backend public pods never enter); every "
        "server runs in its own session, as the edge does, so that autogroup scheduling "
        "treats them alike. The route count costs neither proxy anything visible.",
        "",
        f"1 MiB responses ({top:,} routes), MB/s of body (10^6 bytes):",
        "",
        "| target | MB/s | p99 | proxy CPU µs/req | vs nginx |",
        "|---|---|---|---|---|",
        *big_rows,
        "",
        f"Edge / nginx: **{mbps(edge_top) / mbps(nginx_top):.2f}x** tuned (target ≥ 0.9x), "
        f"{mbps(untuned) / mbps(nginx_top):.2f}x untuned; the tuning alone: "
        f"{mbps(edge_top) / mbps(untuned):.2f}x.",
        "",
        "HAProxy tunings applied (`EdgeSettings.splice_responses`, on by default): "
        + ", ".join(f"`{t}`" for t in TUNINGS)
        + " (response bodies go pod socket → pipe → client socket inside the kernel, never "
        "through HAProxy's buffers). Tried and left out, no gain beyond the noise once "
        "splicing is on: `tune.bufsize` 32k/64k, `tune.pipesize` 256k, "
        "`tune.rcvbuf.server`/`tune.sndbuf.client` 1 MiB, `nbthread 1`; "
        "`option splice-auto` gained nothing.",
        "",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def temp_root(prefix: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    stop_cleanly_on_sigterm()
    for tool in ("haproxy", "nginx", "wrk"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin") is None:
            raise SystemExit(f"bench.edge needs {tool} (apt-get install -y {tool})")
    os.environ["PATH"] += os.pathsep + "/usr/sbin"
    started = time.monotonic()
    with temp_root("openpod-bench-edge-") as root:
        results = run(root)
    text = report(results)
    print(text)
    write_section(HEADING, text)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
