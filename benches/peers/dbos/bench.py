"""The DBOS side of scripts/peer-bench: the four-step trivial saga as a DBOS
workflow of four @DBOS.step() functions (each adds one to `done`; DBOS
records each step's output in its system database before the next step
runs), and a driver that starts N workflows from C concurrent threads, each
awaiting its workflow's result, then prints one JSON line with the same
first seven fields as examples/loadgen.rs. Every result is checked; a wrong
or failed workflow makes the exit code 1.

    python bench.py --db-url postgresql://postgres@127.0.0.1:PORT/NAME \
        --sagas N --concurrency C [--warmup W]

"flushes" is the growth of PostgreSQL's pg_stat_wal.wal_sync (WAL fsyncs,
by backends and the WAL writer) over the measured run, read on a separate
connection; PostgreSQL publishes a backend's counters within about a second
of its going idle, so the reads wait 1.5 s after the warmup and after the
run (outside the timed part).

DBOS runs with its defaults (system database pool of 20 connections,
unbounded executor threads); only the name, the database URL and a quieter
log level are set.
"""

import argparse
import json
import sys
import threading
import time
import uuid
from importlib.metadata import version
from urllib.parse import urlparse

import psycopg
from dbos import DBOS, DBOSConfig


@DBOS.step()
def reserve_seat(done: int) -> int:
    return done + 1


@DBOS.step()
def authorize_payment(done: int) -> int:
    return done + 1


@DBOS.step()
def award_miles(done: int) -> int:
    return done + 1


@DBOS.step()
def confirm_booking(done: int) -> int:
    return done + 1


@DBOS.workflow()
def saga(booking: dict) -> dict:
    done = booking["done"]
    for step in (reserve_seat, authorize_payment, award_miles, confirm_booking):
        done = step(done)
    return {"n": booking["n"], "done": done}


def run(total: int, concurrency: int, tag: str):
    """Runs `total` workflows from `concurrency` threads; returns the sorted
    latencies (ms), the wrong outcomes and the wall time (s)."""
    lock = threading.Lock()
    next_i = [0]
    latencies: list[float] = []
    wrong: list[str] = []

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= total:
                return
            t = time.perf_counter()
            try:
                handle = DBOS.start_workflow(saga, {"n": i, "done": 0})
                out = handle.get_result()
                ms = (time.perf_counter() - t) * 1000.0
                with lock:
                    latencies.append(ms)
                    if out != {"n": i, "done": 4}:
                        wrong.append(f"{tag} saga {i} returned {out!r}")
            except Exception as e:  # reported, and the exit code says so
                with lock:
                    wrong.append(f"{tag} saga {i}: {e!r}")

    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, total))]
    started = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return latencies, wrong, wall


def percentile(sorted_ms: list[float], p: float) -> float:
    """Same rule as loadgen's percentile(): nearest rank on (len - 1) * p."""
    return sorted_ms[round((len(sorted_ms) - 1) * p)]


def wal_syncs(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("select wal_sync from pg_stat_wal").fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-url", required=True)
    ap.add_argument("--sagas", type=int, required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=0)
    a = ap.parse_args()
    if a.sagas <= 0 or a.concurrency <= 0:
        ap.error("--sagas and --concurrency must be positive")
    host = urlparse(a.db_url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        ap.error(f"--db-url must be a loopback address, not {host}")

    config: DBOSConfig = {
        "name": "saga-peer-bench",
        "system_database_url": a.db_url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    tag = uuid.uuid4().hex[:8]
    if a.warmup > 0:
        _, wrong, _ = run(a.warmup, a.concurrency, tag + "-warmup")
        if wrong:
            print(f"warmup: {len(wrong)} wrong; first: {wrong[0]}", file=sys.stderr)
            return 1
    time.sleep(1.5)
    syncs_before = wal_syncs(a.db_url)
    latencies, wrong, wall = run(a.sagas, a.concurrency, tag)
    DBOS.destroy()
    time.sleep(1.5)
    flushes = wal_syncs(a.db_url) - syncs_before
    line = {
        "concurrency": a.concurrency,
        "flushes": flushes,
        "p50_ms": round(percentile(latencies, 0.5), 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 3) if latencies else None,
        "sagas": a.sagas,
        "sagas_per_s": round(a.sagas / wall),
        "scenario": "throughput",
        "system": "dbos",
        "version": version("dbos"),
        "python": sys.version.split()[0],
        "warmup": a.warmup,
        "flushes_per_saga": round(flushes / a.sagas, 3),
        "errors": len(wrong),
    }
    print(json.dumps(line), flush=True)
    if wrong:
        print(f"{len(wrong)} wrong outcomes of {a.sagas} sagas; first: {wrong[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
