//! One engine process of several sharing a PostgreSQL database: the child
//! that `tests/postgres.rs` runs three of (and kills one of) to check
//! takeover, fencing and effectively-once effects across processes.
//!
//! ```text
//! cargo run -p saga-engine --features postgres --example pg_worker -- \
//!     --url postgres://postgres@127.0.0.1:5432/db --owner w1 \
//!     [--sagas 300] [--concurrency 16] [--step-ms 20] [--lease-ttl-ms 1500] [--deadline-s 120]
//!     [--retention-ms W]
//! ```
//!
//! It starts `--sagas` four-step sagas with idempotency keys `{owner}-{n}`
//! (every fifth one is rejected at step 3 and compensates), then keeps
//! running, so that it takes over sagas of processes that died, until no
//! saga in the database is active; then it shuts down and prints one JSON
//! line. Each step applies its effect through a ledger outside the engine's
//! store, a table with a unique key per effect, as a participant would:
//! every attempt is counted in `effect_attempts`, and only the first apply
//! of a key lands in `effects`.
//!
//! With `--retention-ms W` it also runs retention passes (the engine's own
//! pass, [`Engine::purge_finished`], every 20 ms with a window of `W` ms)
//! while it works, and reports how many sagas its passes purged, so a test
//! can check that processes purging one database count each saga once.

#[cfg(feature = "postgres")]
mod worker {
    use saga_engine::store::PostgresStore;
    use saga_engine::{
        Engine, Retention, RetryPolicy, SagaDefinition, Step, StepContext, StepError, Store,
    };
    use serde::{Deserialize, Serialize};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio_postgres::{Client, NoTls};

    /// The ledger's tables, created by the first worker to start.
    const LEDGER_SCHEMA: &str = "
        SELECT pg_advisory_xact_lock(7411);
        CREATE TABLE IF NOT EXISTS effects (
            key        TEXT PRIMARY KEY,
            saga_id    TEXT NOT NULL,
            step       TEXT NOT NULL,
            generation BIGINT NOT NULL,
            applied_by TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS effect_attempts (
            key        TEXT NOT NULL,
            generation BIGINT NOT NULL,
            attempt    INT NOT NULL,
            by_owner   TEXT NOT NULL,
            applied    BOOLEAN NOT NULL
        );
        CREATE TABLE IF NOT EXISTS compensations (
            key        TEXT PRIMARY KEY,
            saga_id    TEXT NOT NULL,
            step       TEXT NOT NULL,
            had_effect BOOLEAN NOT NULL,
            applied_by TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS compensation_attempts (
            key      TEXT NOT NULL,
            by_owner TEXT NOT NULL,
            applied  BOOLEAN NOT NULL
        );
    ";

    const STEPS: [&str; 4] = ["reserve", "charge", "award", "confirm"];

    #[derive(Serialize, Deserialize)]
    struct Job {
        n: u64,
        reject_at: Option<usize>,
    }

    /// The participant's side: a few connections used in turn.
    struct Ledger {
        clients: Vec<Client>,
        next: AtomicUsize,
        owner: String,
        step_delay: Duration,
    }

    impl Ledger {
        fn client(&self) -> &Client {
            &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()]
        }
    }

    struct Effect {
        index: usize,
        ledger: Arc<Ledger>,
    }

    fn retryable(e: tokio_postgres::Error) -> StepError {
        StepError::retryable(format!("ledger: {e}"))
    }

    #[saga_engine::async_trait]
    impl Step<Job> for Effect {
        async fn run(&self, ctx: &StepContext, job: &mut Job) -> Result<(), StepError> {
            if job.reject_at == Some(self.index) {
                return Err(StepError::rejected("injected rejection"));
            }
            let l = &self.ledger;
            // Apply once per key: a second apply (a retry after a crash or
            // a takeover) is refused by the key and only counted. One
            // statement, so the effect and its count land together.
            l.client()
                .execute(
                    "WITH fx AS (
                         INSERT INTO effects (key, saga_id, step, generation, applied_by)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING
                         RETURNING 1)
                     INSERT INTO effect_attempts (key, generation, attempt, by_owner, applied)
                     SELECT $1, $4, $6, $5, EXISTS (SELECT 1 FROM fx)",
                    &[
                        &ctx.idempotency_key,
                        &ctx.saga_id.as_str(),
                        &ctx.step,
                        &(ctx.fencing_token as i64),
                        &l.owner,
                        &(ctx.attempt as i32),
                    ],
                )
                .await
                .map_err(retryable)?;
            // The step's reply takes a while: a kill now leaves the effect
            // applied but the step not recorded, so its new owner retries it.
            tokio::time::sleep(l.step_delay).await;
            Ok(())
        }

        async fn compensate(&self, ctx: &StepContext, _: &Job) -> Result<(), StepError> {
            let l = &self.ledger;
            l.client()
                .execute(
                    "WITH c AS (
                         INSERT INTO compensations (key, saga_id, step, had_effect, applied_by)
                         SELECT $1, $2, $3, EXISTS (SELECT 1 FROM effects WHERE key = $1), $4
                         ON CONFLICT (key) DO NOTHING
                         RETURNING 1)
                     INSERT INTO compensation_attempts (key, by_owner, applied)
                     SELECT $1, $4, EXISTS (SELECT 1 FROM c)",
                    &[
                        &ctx.idempotency_key,
                        &ctx.saga_id.as_str(),
                        &ctx.step,
                        &l.owner,
                    ],
                )
                .await
                .map_err(retryable)?;
            tokio::time::sleep(l.step_delay / 2).await;
            Ok(())
        }
    }

    struct Args {
        url: String,
        owner: String,
        sagas: u64,
        concurrency: usize,
        step_ms: u64,
        lease_ttl_ms: u64,
        deadline_s: u64,
        retention_ms: Option<u64>,
    }

    fn parse_args() -> Result<Args, String> {
        let mut a = Args {
            url: String::new(),
            owner: String::new(),
            sagas: 300,
            concurrency: 16,
            step_ms: 20,
            lease_ttl_ms: 1_500,
            deadline_s: 120,
            retention_ms: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
            match flag.as_str() {
                "--url" => a.url = value,
                "--owner" => a.owner = value,
                "--sagas" => a.sagas = num(&value)?,
                "--concurrency" => a.concurrency = num(&value)?.max(1) as usize,
                "--step-ms" => a.step_ms = num(&value)?,
                "--lease-ttl-ms" => a.lease_ttl_ms = num(&value)?,
                "--deadline-s" => a.deadline_s = num(&value)?,
                "--retention-ms" => a.retention_ms = Some(num(&value)?),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if a.url.is_empty() || a.owner.is_empty() {
            return Err("--url and --owner are required".into());
        }
        Ok(a)
    }

    pub async fn main() -> Result<(), String> {
        let args = parse_args()?;
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (c, conn) = tokio_postgres::connect(&args.url, NoTls)
                .await
                .map_err(|e| format!("ledger connect: {e}"))?;
            tokio::spawn(conn);
            clients.push(c);
        }
        clients[0]
            .batch_execute(&format!("BEGIN; {LEDGER_SCHEMA} COMMIT;"))
            .await
            .map_err(|e| format!("ledger schema: {e}"))?;
        let ledger = Arc::new(Ledger {
            clients,
            next: AtomicUsize::new(0),
            owner: args.owner.clone(),
            step_delay: Duration::from_millis(args.step_ms),
        });
        let store = Arc::new(
            PostgresStore::connect_with_pool(&args.url, 8)
                .await
                .map_err(|e| format!("store: {e}"))?,
        );
        let mut def = SagaDefinition::<Job>::builder("pg_job", 1)
            .default_retry(
                RetryPolicy::default()
                    .max_attempts(20)
                    .backoff(Duration::from_millis(10), Duration::from_millis(200)),
            )
            .default_compensation_retry(
                RetryPolicy::default()
                    .max_attempts(50)
                    .backoff(Duration::from_millis(10), Duration::from_millis(200)),
            );
        for (i, name) in STEPS.iter().enumerate() {
            def = def.step(
                *name,
                Effect {
                    index: i,
                    ledger: ledger.clone(),
                },
            );
        }
        let shared: Arc<dyn Store> = store.clone();
        let engine = Engine::builder_arc(shared)
            .register(def.build().map_err(|e| e.to_string())?)
            .owner(args.owner.clone())
            .lease_ttl(Duration::from_millis(args.lease_ttl_ms))
            .open()
            .await
            .map_err(|e| format!("engine: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(args.deadline_s);
        let stop_purging = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let purger = args.retention_ms.map(|ms| {
            let engine = engine.clone();
            let stop = stop_purging.clone();
            tokio::spawn(async move {
                let policy = Retention::new(Duration::from_millis(ms));
                let mut purged = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let report = engine
                        .purge_finished(Some(&policy))
                        .await
                        .map_err(|e| format!("retention pass: {e}"))?;
                    purged += report.purged;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok::<usize, String>(purged)
            })
        });

        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let engine = engine.clone();
            let store = store.clone();
            let next = next.clone();
            let owner = args.owner.clone();
            let total = args.sagas as usize;
            let args_retention = args.retention_ms.is_some();
            tasks.push(tokio::spawn(async move {
                let mut finished = 0u64;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<u64, String>(finished);
                    }
                    let job = Job {
                        n: n as u64,
                        reject_at: n.is_multiple_of(5).then_some(2),
                    };
                    let key = format!("{owner}-{n}");
                    let id = engine
                        .start("pg_job", &job, Some(&key))
                        .await
                        .map_err(|e| format!("start {key}: {e}"))?;
                    // If this process loses the saga's lease (a stall past
                    // the TTL), another process finishes it: watch the store.
                    let rec = match engine.wait(&id).await {
                        Ok(rec) => Some(rec),
                        Err(_) => loop {
                            match store.get(&id).await {
                                Ok(Some(r)) if r.status().is_terminal() => break Some(r),
                                // Purged by retention, which only takes
                                // finished sagas (the test checks each
                                // one's effects in the ledger).
                                Ok(None) if args_retention => break None,
                                Ok(_) if Instant::now() > deadline => {
                                    return Err(format!("{key} unfinished at the deadline"))
                                }
                                Ok(_) => {}
                                Err(e) => return Err(format!("get {key}: {e}")),
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        },
                    };
                    if let Some(rec) = rec.filter(|r| !r.status().is_terminal()) {
                        return Err(format!("{key} ended {:?}", rec.status()));
                    }
                    finished += 1;
                }
            }));
        }
        let mut own = 0;
        for t in tasks {
            own += t.await.map_err(|e| e.to_string())??;
        }
        // Stay until nothing is active anywhere: sagas of a process that
        // died are claimed by the lease loop once their leases run out.
        loop {
            let active = store
                .list_active()
                .await
                .map_err(|e| format!("list_active: {e}"))?;
            if active.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} sagas still active at the deadline, e.g. {:?}",
                    active.len(),
                    active
                        .iter()
                        .take(3)
                        .map(|r| (r.id.to_string(), r.status(), r.lease.clone()))
                        .collect::<Vec<_>>()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_purging.store(true, Ordering::SeqCst);
        let purged = match purger {
            Some(task) => Some(task.await.map_err(|e| e.to_string())??),
            None => None,
        };
        engine.shutdown(Duration::from_secs(5)).await;
        println!(
            "{}",
            serde_json::json!({"owner": args.owner, "own_sagas_finished": own, "purged": purged})
        );
        Ok(())
    }
}

#[cfg(feature = "postgres")]
#[tokio::main]
async fn main() {
    if let Err(e) = worker::main().await {
        eprintln!("pg_worker: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "postgres"))]
fn main() {
    eprintln!("pg_worker needs the `postgres` feature: cargo run -p saga-engine --features postgres --example pg_worker");
    std::process::exit(2);
}
