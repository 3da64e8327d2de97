"""Benchmark: meter events into the control plane, settlement cuts, event → visible in the API.

Run `python -m bench.metering` (about 2 minutes); it replaces its own section of
bench/RESULTS.md. For SQLite and then PostgreSQL (a real server the script starts):

- ingestion: a real control plane (`openpod server`) with 1,000 pods placed on a node that
  speaks the node protocol but runs nothing; a load process opens 1,000 meter WebSockets (one
  per pod, each with its pod's own token) and has every meter send one event, wait for its
  ack and send the next, for 10 s. Events/s = acked events / elapsed. The reference in the
  same run is one meter alone doing the same (the per-message round trip without batching);
- event → visible: one meter sends an event and GET /usage is polled until the pod's seconds
  include it; 20 samples with the 1,000 meters idle and 20 while they run;
- settlement cut: 10,000 running runs with unsettled seconds, cut in one transaction by
  services.metering.cut (what the settlement round runs every period); 3 cuts, each after
  every run gained a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text, update
from websockets.asyncio.client import connect as aconnect
from websockets.sync.client import connect

from bench import stop_cleanly_on_sigterm
from bench.results import write_section
from openpod.adapters.store import Database, migrate
from openpod.adapters.store.models import Account, Node, Pod, PodRun, Provider
from openpod.protocol import GpuInfo, Hello
from openpod.services import metering
from tests.support.platform import ControlPlane, signup
from tests.support.postgres import postgres_server

HEADING = "## Metering: meter events in, settlements out"
PODS = 1000
LOAD_SECONDS = 10.0
CUT_RUNS = 10_000
GPU = "NVIDIA H100 80GB HBM3"
T0 = 1_764_140_000.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the load: its own process, so that its CPU is not the server's ---------------------------


async def _meter_loop(
    url: str, token: str, stop_at: list[float], counts: dict[str, int], start: asyncio.Event
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aconnect(url, additional_headers=headers, max_queue=4) as ws:
        seq = json.loads(await ws.recv())["acked"]
        counts["connected"] += 1
        await start.wait()
        while time.monotonic() < stop_at[0]:
            seq += 1
            event = {"seq": seq, "kind": "heartbeat" if seq > 1 else "started", "at": T0 + 5 * seq}
            await ws.send(json.dumps({"type": "events", "events": [event]}))
            answer = json.loads(await ws.recv())
            if answer.get("acked") != seq:
                raise RuntimeError(f"unexpected answer {answer}")
            counts["events"] += 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(url: str, tokens: list[str], seconds: float, server: int) -> dict[str, float]:
    counts, stop_at, start = {"connected": 0, "events": 0}, [float("inf")], asyncio.Event()
    tasks = [asyncio.create_task(_meter_loop(url, t, stop_at, counts, start)) for t in tokens]
    while counts["connected"] < len(tasks):  # every meter welcomed before the clock starts
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise RuntimeError(f"a meter failed to connect: {failed[0].exception()}")
        await asyncio.sleep(0.05)
    began, server_cpu, own_cpu = time.monotonic(), cpu_seconds(server), time.process_time()
    stop_at[0] = began + seconds
    start.set()
    await asyncio.gather(*tasks)
    return {
        "events": counts["events"],
        "seconds": time.monotonic() - began,
        "server_cpu": cpu_seconds(server) - server_cpu,
        "load_cpu": time.process_time() - own_cpu,
    }


def load_main(argv: list[str]) -> None:
    url, tokens_file, seconds, server = argv[0], Path(argv[1]), float(argv[2]), int(argv[3])
    tokens = json.loads(tokens_file.read_text())
    print(json.dumps(asyncio.run(_load(url, tokens, seconds, server))))


def run_load(
    url: str, tokens: list[str], root: Path, seconds: float, server: int
) -> dict[str, float]:
    tokens_file = root / f"tokens-{len(tokens)}.json"
    tokens_file.write_text(json.dumps(tokens))
    argv = [sys.executable, "-m", "bench.metering", "--load", url, str(tokens_file)]
    argv += [str(seconds), str(server)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- a control plane with 1,000 placed pods ----------------------------------------------------


@contextlib.contextmanager
def plane_with_pods(root: Path, database_url: str | None) -> Iterator[dict[str, Any]]:
    # The load plays 5 s heartbeats as fast as it can: the check that a run bills no more than
    # the control plane saw pass would hold its usage back, so it is off here.
    env = {"OPENPOD_SETTLEMENT_PERIOD": "60", "OPENPOD_METER_CLOCK_CHECK": "false"}
    plane = ControlPlane(root, database_url, env=env)
    plane.start()
    node_ws = None
    try:
        provider = signup(plane.url, "provider")
        provider.ok("POST", "/providers", json={"payoutWallet": "0x" + "33" * 20})
        created = provider.ok("POST", "/nodes", json={"name": "sink"})
        node_ws = connect(
            plane.url.replace("http://", "ws://") + "/nodes/connect",
            additional_headers={"Authorization": f"Bearer {created['token']}"},
            max_size=None,
        )
        node_ws.__enter__()
        gpus = [GpuInfo(index=i, type=GPU) for i in range(PODS + 1)]
        node_ws.send(
            Hello(runtime="sink", public_host="127.0.0.1", gpus=gpus, pods=[]).model_dump_json()
        )
        node_ws.recv(timeout=30)
        drain = threading.Thread(target=_drain, args=(node_ws,), daemon=True)
        drain.start()
        user = signup(plane.url, "user")
        body = {"name": "b", "imageName": "img", "gpuTypeId": GPU, "gpuCount": 1, "ports": "22/tcp"}
        with ThreadPoolExecutor(8) as pool:
            pods = list(
                pool.map(lambda _: user.ok("POST", "/pods", json=body)["id"], range(PODS + 1))
            )
        secret = bytes.fromhex((root / "edge-secret").read_text().strip())
        yield {
            "plane": plane,
            "user": user,
            "pods": pods,
            "tokens": [metering.meter_token(secret, pod, 1) for pod in pods],
            "url": plane.url.replace("http://", "ws://") + "/meter/connect",
        }
        user.http.close()
        provider.http.close()
    finally:
        if node_ws is not None:
            node_ws.close()
        plane.stop()


def _drain(ws: Any) -> None:
    with contextlib.suppress(Exception):
        while True:
            ws.recv()


def visible_latency(ctx: dict[str, Any], samples: int = 20) -> list[float]:
    """One meter (the extra pod) sends an event; poll GET /usage until its seconds show it."""
    pod, token, user = ctx["pods"][-1], ctx["tokens"][-1], ctx["user"]
    times = []
    with connect(ctx["url"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        seq = json.loads(ws.recv(timeout=10))["acked"]
        if seq == 0:
            ws.send(
                json.dumps({"type": "events", "events": [{"seq": 1, "kind": "started", "at": T0}]})
            )
            ws.recv(timeout=10)
            seq = 1
        for _ in range(samples):
            seq += 1
            began = time.monotonic()
            ws.send(
                json.dumps(
                    {
                        "type": "events",
                        "events": [{"seq": seq, "kind": "heartbeat", "at": T0 + 5 * (seq - 1)}],
                    }
                )
            )
            want = 5 * (seq - 1)
            while user.ok("GET", "/usage", params={"pod": pod})[0]["seconds"] < want:
                time.sleep(0.005)  # polling: resolution 5 ms plus one GET
            times.append(time.monotonic() - began)
            ws.recv(timeout=10)  # the ack
    return times


def ingestion(root: Path, database_url: str | None) -> dict[str, Any]:
    with plane_with_pods(root, database_url) as ctx:
        server = ctx["plane"].proc.pid
        single = run_load(ctx["url"], ctx["tokens"][:1], root, 3.0, server)
        idle = visible_latency(ctx)
        many = run_load(ctx["url"], ctx["tokens"][:PODS], root, LOAD_SECONDS, server)
        # Then the same load again with the latency probe beside it (its polling of GET
        # /usage costs the server CPU, so it stays out of the throughput run above).
        under: list[float] = []
        probe = threading.Thread(target=lambda: under.extend(_delayed_latency(ctx)), daemon=True)
        probe.start()
        run_load(ctx["url"], ctx["tokens"][:PODS], root, LOAD_SECONDS, server)
        probe.join(timeout=60)
        return {"single": single, "many": many, "idle": idle, "under": under}


def _delayed_latency(ctx: dict[str, Any]) -> list[float]:
    time.sleep(4.0)  # the load's meters connect first (a benchmark, not a test: no assertion)
    return visible_latency(ctx, samples=20)


# --- settlement cut ------------------------------------------------------------------------


def cut_times(url: str) -> list[float]:
    migrate(url)
    db = Database(url)
    try:
        with db.transaction() as s:
            s.execute(
                insert(Account), [{"id": "acc_b", "name": "b", "is_admin": False, "balance": 0}]
            )
            s.execute(
                insert(Provider),
                [{"id": "prv_b", "account_id": "acc_b", "payout_wallet": "0x" + "44" * 20}],
            )
            s.execute(
                insert(Node),
                [
                    {
                        "id": "node_b",
                        "provider_id": "prv_b",
                        "name": "n",
                        "token_hash": "h" * 64,
                        "gpus": [],
                        "online": False,
                    }
                ],
            )
            pods = [
                {"id": f"p{i:011d}", "account_id": "acc_b", "node_id": "node_b", "name": "b",
                 "image": "i", "gpu_type_id": GPU, "gpu_count": 1, "gpu_indices": [], "ports": [],
                 "env": {}, "command": [], "rate_per_second": 3 * 10**15,
                 "desired_status": "RUNNING", "status": "RUNNING", "generation": 1,
                 "port_mappings": {}, "ready_ports": [], "http_urls": {}, "ready_at": {}}
                for i in range(CUT_RUNS)
            ]  # fmt: skip
            s.execute(insert(Pod), pods)
            runs = [
                {"pod_id": p["id"], "generation": 1, "account_id": "acc_b", "provider_id": "prv_b",
                 "payout_wallet": "0x" + "44" * 20, "node_id": "node_b", "gpu_type_id": GPU,
                 "gpu_count": 1, "rate_per_second": 3 * 10**15, "grace_ms": 15_000,
                 "next_seq": 2, "max_seq": 1, "intervals": [[0, 0]], "billable_ms": 0,
                 "open_": True, "closed": False, "billed_seconds": 0}
                for p in pods
            ]  # fmt: skip
            s.execute(insert(PodRun), runs)
        times = []
        for minute in range(1, 4):
            with db.transaction() as s:
                s.execute(update(PodRun).values(billable_ms=minute * 60_000))
            began = time.monotonic()
            with db.transaction() as s:
                cut = metering.cut(s)
            times.append(time.monotonic() - began)
            if len(cut) != CUT_RUNS:
                raise RuntimeError(f"cut {len(cut)} settlements, expected {CUT_RUNS}")
        with db.transaction(readonly=True) as s:
            total = s.execute(text("SELECT COUNT(*) FROM settlements")).scalar_one()
            assert total == 3 * CUT_RUNS, total
        return times
    finally:
        db.dispose()


# --- report --------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], pg_version: str) -> str:
    lines = [
        f"{HEADING} ({time.strftime('%Y-%m-%d')}, {platform.node() or 'host'}, "
        f"{os.cpu_count()} cores, {pg_version})",
        "",
        "`python -m bench.metering`. A real `openpod server`; 1,000 pods placed on a node that "
        "speaks the node protocol and runs nothing; a separate load process opens one meter "
        "WebSocket per pod (each with its own token) and every meter sends an event, waits for "
        "its ack, sends the next, for 10 s. The reference row is one meter alone, the same way.",
        "",
        "| backend | meters | events/s | vs one meter | server CPU / event | load CPU / event | event → visible in GET /usage p50 / p95 (idle) | (under load) | settlement cut, 10,000 runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, r in results.items():
        many = r["many"]["events"] / r["many"]["seconds"]
        single = r["single"]["events"] / r["single"]["seconds"]
        idle, under = r["idle"], r["under"] or [float("nan")]
        cut = statistics.median(r["cut"])
        lines.append(
            f"| {backend} | 1,000 | {many:,.0f} | {many / single:.1f}x ({single:,.0f}/s) | "
            f"{r['many']['server_cpu'] * 1e6 / r['many']['events']:.0f} µs | "
            f"{r['many']['load_cpu'] * 1e6 / r['many']['events']:.0f} µs | "
            f"{pct(idle, 0.5) * 1000:.0f} / {pct(idle, 0.95) * 1000:.0f} ms | "
            f"{pct(under, 0.5) * 1000:.0f} / {pct(under, 0.95) * 1000:.0f} ms | "
            f"{cut * 1000:.0f} ms ({', '.join(f'{t * 1000:.0f}' for t in r['cut'])}) |"
        )
    sqlite = results.get("SQLite")
    if sqlite:
        rate = sqlite["many"]["events"] / sqlite["many"]["seconds"]
        lines += ["", f"SQLite ingestion: **{rate:,.0f} events/s** (target ≥ 5,000); "
                  "event → visible p95 under load: "
                  f"**{pct(sqlite['under'] or [float('nan')], 0.95) * 1000:.0f} ms** (target < 1 s)."]  # fmt: skip
    lines += [
        "",
        "Every message of every meter is stored, applied and acknowledged in its own order; "
        "the server takes whatever messages have queued while the last transaction committed "
        "and stores them in one (services.meter_hub), so the rate grows with the number of "
        "meters where one meter alone is bound by its round trip. The load process and the "
        "server share the 2 cores. Each meter sends again only once answered, so under load "
        "an event waits behind the other 999 meters' (about 1,000 / events/s): the closed "
        "loop's queue. At the real rate (a heartbeat every 5 s) 1,000 pods send 200 events/s. "
        "This VM's speed drifts: runs of the same code moved between ~4,100 and ~6,900 "
        "events/s (server CPU 130-230 µs per event), so the CPU per event is the steadier "
        "figure.",
    ]
    return "\n".join(lines)


def main() -> None:
    stop_cleanly_on_sigterm()
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    root = Path(tempfile.mkdtemp(prefix="openpod-bench-metering-"))
    pg_version = "PostgreSQL"
    try:
        (root / "sqlite").mkdir()
        results["SQLite"] = ingestion(root / "sqlite", None)
        results["SQLite"]["cut"] = cut_times(f"sqlite:///{root / 'cut.db'}")
        print("sqlite:", results["SQLite"], flush=True)
        with postgres_server() as pg:
            engine_url = pg
            (root / "pg").mkdir()
            results["PostgreSQL"] = ingestion(root / "pg", engine_url)
            base = engine_url.rsplit("/", 1)[0]
            db = Database(engine_url)
            with db.transaction(readonly=True) as s:
                pg_version = "PostgreSQL " + str(
                    s.execute(text("SHOW server_version")).scalar_one()
                )
            db.dispose()
            admin = create_engine(engine_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text("CREATE DATABASE bench_cut"))
            admin.dispose()
            results["PostgreSQL"]["cut"] = cut_times(f"{base}/bench_cut")
            print("postgresql:", results["PostgreSQL"], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text_ = report(results, pg_version)
    print(text_)
    write_section(HEADING, text_)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        load_main(sys.argv[2:])
    else:
        main()
