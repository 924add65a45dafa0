// Drives the Restate service: N calls to the ingress (HTTP/1.1, keep-alive,
// one connection per worker) from C concurrent workers, each awaiting its
// call's result before the next, and prints one JSON line with the same
// first seven fields as examples/loadgen.rs. Every result is checked
// (done == 4 for its n); a wrong or failed call makes the exit code 1.
//
// With --metrics (the server's Prometheus endpoint, on its node port), the
// "flushes" field is the growth over the measured run of RocksDB's
// `wal_synced` counters summed over the server's databases (the log
// server's WAL fsyncs, plus the metadata server's).
//
//   node driver.mjs --ingress http://127.0.0.1:8080 --sagas N --concurrency C
//                   [--warmup W] [--version V] [--metrics http://127.0.0.1:5122/metrics]
import * as http from "node:http";

function parseArgs(argv) {
  const a = { ingress: "http://127.0.0.1:8080", sagas: 1000, concurrency: 1, warmup: 0, version: null, metrics: null };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === "--ingress") a.ingress = v;
    else if (k === "--sagas") a.sagas = Number(v);
    else if (k === "--concurrency") a.concurrency = Number(v);
    else if (k === "--warmup") a.warmup = Number(v);
    else if (k === "--version") a.version = v;
    else if (k === "--metrics") a.metrics = v;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!(a.sagas > 0 && a.concurrency > 0)) throw new Error("--sagas and --concurrency must be positive");
  const u = new URL(a.ingress);
  a.host = u.hostname;
  a.port = Number(u.port || 80);
  return a;
}

const args = parseArgs(process.argv.slice(2));
for (const url of [args.ingress, args.metrics].filter(Boolean)) {
  const h = new URL(url).hostname;
  if (!(h.startsWith("127.") || h === "localhost" || h === "[::1]")) {
    throw new Error(`${url} is not a loopback address`);
  }
}

// Sum of restate_rocksdb_wal_synced_total over every db label.
async function walSyncs() {
  if (!args.metrics) return null;
  const text = await (await fetch(args.metrics)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = line.match(/^restate_rocksdb_wal_synced_total\{[^}]*\} (\S+)$/);
    if (m) sum += Number(m[1]);
  }
  return sum;
}
const agent = new http.Agent({ keepAlive: true, maxSockets: args.concurrency });

function call(n) {
  const body = JSON.stringify({ n, done: 0 });
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: args.host,
        port: args.port,
        path: "/saga/run",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (data += d));
        res.on("end", () => {
          if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}: ${data}`));
          try {
            resolve(JSON.parse(data));
          } catch (e) {
            reject(new Error(`bad body ${data}`));
          }
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

// Runs `total` calls from `c` workers; returns sorted latencies (ms), the
// wrong outcomes and the wall time (s).
async function run(total, c, base) {
  let next = 0;
  const latencies = [];
  const wrong = [];
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      const n = base + i;
      const t = process.hrtime.bigint();
      try {
        const out = await call(n);
        latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
        if (out.n !== n || out.done !== 4) wrong.push(`saga ${n} returned ${JSON.stringify(out)}`);
      } catch (e) {
        wrong.push(`saga ${n}: ${e.message}`);
      }
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(c, total) }, worker));
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((x, y) => x - y);
  return { latencies, wrong, wall };
}

// Same rule as loadgen's percentile(): nearest rank on (len - 1) * p.
const percentile = (sorted, p) => sorted[Math.round((sorted.length - 1) * p)];
const round = (x, places) => Math.round(x * 10 ** places) / 10 ** places;

// Each run's n values are fresh (time-based), so no call can meet an old
// invocation's result.
const base = Date.now() * 1000;
if (args.warmup > 0) {
  const w = await run(args.warmup, args.concurrency, base);
  if (w.wrong.length) {
    console.error(`warmup: ${w.wrong.length} wrong; first: ${w.wrong[0]}`);
    process.exit(1);
  }
}
const syncsBefore = await walSyncs();
const r = await run(args.sagas, args.concurrency, base + args.warmup);
const syncsAfter = await walSyncs();
const flushes = syncsBefore === null ? null : syncsAfter - syncsBefore;
const line = {
  concurrency: args.concurrency,
  flushes,
  p50_ms: r.latencies.length ? round(percentile(r.latencies, 0.5), 3) : null,
  p99_ms: r.latencies.length ? round(percentile(r.latencies, 0.99), 3) : null,
  sagas: args.sagas,
  sagas_per_s: Math.round(args.sagas / r.wall),
  scenario: "throughput",
  system: "restate",
  version: args.version,
  node: process.versions.node,
  warmup: args.warmup,
  flushes_per_saga: flushes === null ? null : round(flushes / args.sagas, 3),
  errors: r.wrong.length,
};
console.log(JSON.stringify(line));
agent.destroy();
if (r.wrong.length) {
  console.error(`${r.wrong.length} wrong outcomes of ${args.sagas} sagas; first: ${r.wrong[0]}`);
  process.exit(1);
}
