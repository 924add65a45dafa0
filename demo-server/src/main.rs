//! The `demo-server` binary: serve the booking demo (default), run one
//! participant alone (`--role`), or import and export the catalog.
//!
//! ```text
//! demo-server [--addr 127.0.0.1:8080] [--data-dir ./data]
//!             [--inventory-url URL] [--payments-url URL] [--loyalty-url URL]
//! demo-server --role inventory|payments|loyalty [--addr ..] [--data-dir ..]
//! demo-server import --dir DIR [--currency INR] [--mode skip|reject] [--data-dir ..]
//! demo-server export --dir DIR [--data-dir ..]
//! demo-server sagas list|show|history|retry|cancel|purge|export [--server URL] [--json]
//! ```
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`): plain text,
//! coloured only when stderr is a terminal (and `NO_COLOR` is unset), or one
//! JSON object per line with `--log-format json`. SIGINT or
//! SIGTERM shuts down gracefully; sagas still running resume at the next
//! start.

use booking_domain::catalog::Catalog;
use booking_domain::import::{export_airports, export_flights, Import, ImportMode};
use booking_domain::Currency;
use clap::{Parser, Subcommand, ValueEnum};
use demo_server::roles::{serve_role_with, Role, RoleConfig};
use demo_server::state::{open_db, RemoteParticipants, ServerConfig};
use demo_server::ServiceToken;
use demo_server::{AppState, TokenSource};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "demo-server",
    version,
    about = "Flight booking on a durable saga engine: HTTP API, live saga view, admin."
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    addr: SocketAddr,
    /// Directory of the embedded database and the admin token.
    #[arg(long, default_value = "./data", global = true)]
    data_dir: PathBuf,
    /// Serve only this participant (for a multi-process setup).
    #[arg(long, value_enum, conflicts_with_all = ["inventory_url", "payments_url", "loyalty_url"])]
    role: Option<Role>,
    /// Reach the inventory at this URL instead of running it in process.
    #[arg(long)]
    inventory_url: Option<String>,
    /// Reach payments at this URL instead of running it in process.
    #[arg(long)]
    payments_url: Option<String>,
    /// Reach loyalty at this URL instead of running it in process.
    #[arg(long)]
    loyalty_url: Option<String>,
    /// File holding the bearer token between the orchestrator and the
    /// participants (else `DEMO_<ROLE>_SERVICE_TOKEN` or `DEMO_SERVICE_TOKEN`).
    #[arg(long, global = true)]
    service_token_file: Option<PathBuf>,
    /// Print a newly generated admin token on standard output (it is
    /// always kept in the data directory's token file).
    #[arg(long)]
    print_admin_token: bool,
    /// Serve HTTPS only, with this certificate chain (PEM, leaf first);
    /// needs `--tls-key`. Plain HTTP is for loopback only.
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Trust this CA (or self-signed certificate, PEM) for `https://`
    /// participant URLs.
    #[arg(long)]
    participant_ca: Option<PathBuf>,
    /// Requests a minute one client address may make to each rate-limited
    /// route (booking creation and lookup, loyalty lookup, enrollment).
    #[arg(long, default_value_t = 60)]
    rate_per_minute: u32,
    /// The burst a client address may make above that rate.
    #[arg(long, default_value_t = 20)]
    rate_burst: u32,
    /// Seconds a shutdown waits for requests and saga steps under way.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// Keep sagas in a shared PostgreSQL database (`postgres://...`, build
    /// with `--features postgres`) so several servers share the work.
    #[arg(long)]
    store: Option<String>,
    /// Days finished sagas are kept before a background pass purges them
    /// (with their history; stuck and running sagas are never purged);
    /// 0 keeps everything.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    retention: u32,
    /// Seconds a booking whose card needs the customer's confirmation
    /// (strong customer authentication) waits for it before the seats are
    /// released and the authorization voided.
    #[arg(long, default_value_t = 600, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    payment_confirmation_timeout_secs: u64,
    /// Seconds a held booking (`"hold": true`, pay later) keeps its seats
    /// unpaid.
    #[arg(long, default_value_t = 86_400, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    hold_window_secs: u64,
    /// Log format on standard error: text, or json (one object per line,
    /// with the fields of the spans around each event, e.g. `saga_id`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Export every span (saga, step) over OTLP/HTTP to this URL, e.g.
    /// `http://127.0.0.1:4318/v1/traces` (builds with `--features otlp`);
    /// off unless given.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import airports.csv and *flights*.csv from a directory into the
    /// catalog: of a stopped server's data directory, or with `--server`
    /// into a running server, no restart (searches see the old catalog or
    /// the new one, never half), e.g.
    /// `demo-server import --dir ./schedule --server http://127.0.0.1:8080`.
    Import {
        /// A running server to import into (admin token from
        /// DEMO_ADMIN_TOKEN or the data directory).
        #[arg(long)]
        server: Option<String>,
        /// Directory holding airports.csv and *flights*.csv.
        #[arg(long)]
        dir: PathBuf,
        /// Currency of the fares in the files (ISO 4217 code).
        #[arg(long, default_value = "INR")]
        currency: String,
        /// skip: import the good rows and list the bad ones; reject: import
        /// nothing if any row is bad.
        #[arg(long, value_enum, default_value_t = Mode::Skip)]
        mode: Mode,
    },
    /// Export the catalog as airports.csv and flights.csv into a directory.
    Export {
        /// Directory to write (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write a consistent backup of every record of a running server to a
    /// file (format version and SHA-256 checksum), e.g.
    /// `demo-server backup --out skysaga.backup`.
    Backup {
        /// The file to write (replaced whole, through a temporary file).
        #[arg(long)]
        out: PathBuf,
        /// The running server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
    },
    /// Restore a backup into a new or empty data directory (no server
    /// needed), e.g. `demo-server restore --from skysaga.backup --data-dir ./restored`.
    /// Refuses a damaged, truncated or newer file and a non-empty directory.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// List, inspect, retry, cancel, purge and export sagas through a
    /// running server's admin API (or, to read, the data directory of a
    /// stopped one).
    Sagas(demo_server::cli::SagasArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Skip,
    Reject,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init(
        cli.log_format == LogFormat::Json,
        cli.otlp_endpoint.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.command {
        Some(Command::Import {
            server: Some(server),
            dir,
            currency,
            mode,
        }) => import_live(&cli.data_dir, server, dir, currency, *mode),
        Some(Command::Import {
            server: None,
            dir,
            currency,
            mode,
        }) => import(&cli.data_dir, dir, currency, *mode),
        Some(Command::Export { dir }) => export(&cli.data_dir, dir),
        Some(Command::Backup { out, server }) => backup(&cli.data_dir, server, out),
        Some(Command::Restore { from }) => restore(&cli.data_dir, from),
        Some(Command::Sagas(args)) => demo_server::cli::run(
            args,
            &cli.data_dir,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        )
        .map_err(Into::into),
        None => run_server(&cli),
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Fallible = Result<(), Box<dyn std::error::Error>>;

fn backup(data_dir: &Path, server: &str, out: &Path) -> Fallible {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token = demo_server::cli::token(data_dir);
    let header = runtime.block_on(demo_server::backup::client::backup(server, token, out))?;
    println!(
        "demo-server: backup of {} records in {} trees written to {}",
        header.records,
        header.trees,
        out.display()
    );
    Ok(())
}

fn restore(data_dir: &Path, from: &Path) -> Fallible {
    let header = demo_server::backup::client::restore_file(from, data_dir)?;
    println!(
        "demo-server: restored {} records in {} trees (backup of {}) into {}",
        header.records,
        header.trees,
        header.created_at.to_rfc3339(),
        data_dir.display()
    );
    // Keys never travel inside a backup (it would hold its own key).
    println!(
        "demo-server: a backup holds no keys: copy {} and {} from the backed-up server's data directory \
         (same relative paths) into {}, or its sealed cards and passengers' details cannot be opened",
        booking_domain::payments::VAULT_KEY_FILE,
        booking_domain::personal::PERSONAL_KEY_FILE,
        data_dir.display()
    );
    Ok(())
}

fn run_server(cli: &Cli) -> Fallible {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        let listener = tokio::net::TcpListener::bind(cli.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cli.addr))?;
        let addr = listener.local_addr()?;
        let tls = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(demo_server::tls::TlsServer::from_pem_files(cert, key)?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(role) = cli.role {
            std::fs::create_dir_all(&cli.data_dir)?;
            let token = ServiceToken::for_role(role, cli.service_token_file.as_deref())?;
            let db = open_db(&cli.data_dir)?;
            let mut config = RoleConfig::new(role).with_token(token).with_data_dir(&cli.data_dir);
            config.limits.tls = tls.clone();
            let auth = if config.token.is_some() { "bearer token required" } else { "no token: loopback only" };
            println!("demo-server: {role} participant listening on {scheme}://{addr} ({auth})");
            serve_role_with(config, listener, db.clone(), shutdown).await?;
            tokio::task::spawn_blocking(move || db.flush()).await??;
            return Ok(());
        }
        let config = ServerConfig {
            shutdown_grace: Duration::from_secs(cli.shutdown_grace_secs),
            tls,
            rate_per_minute: cli.rate_per_minute,
            rate_burst: cli.rate_burst,
            booking_waits: booking_domain::booking_saga::BookingWaits {
                confirmation_timeout: Duration::from_secs(cli.payment_confirmation_timeout_secs),
                hold_window: Duration::from_secs(cli.hold_window_secs),
            },
            ..ServerConfig::default()
        };
        let file = cli.service_token_file.as_deref();
        let token_for = |role, url: &Option<String>| match url {
            Some(_) => ServiceToken::for_role(role, file),
            None => Ok(None),
        };
        let remote = RemoteParticipants {
            inventory: cli.inventory_url.clone(),
            payments: cli.payments_url.clone(),
            loyalty: cli.loyalty_url.clone(),
            inventory_token: token_for(Role::Inventory, &cli.inventory_url)?,
            payments_token: token_for(Role::Payments, &cli.payments_url)?,
            loyalty_token: token_for(Role::Loyalty, &cli.loyalty_url)?,
            tls: match &cli.participant_ca {
                Some(ca) => Some(demo_server::tls::TlsClient::trusting_pem_file(ca)?),
                None => None,
            },
        };
        let (state, token_source) = AppState::builder(&cli.data_dir)
            .store_url(cli.store.clone())
            .remote(remote.clone())
            .config(config)
            .retention(retention(cli.retention))
            .open()
            .await?;
        for (name, url) in [
            ("inventory", &remote.inventory),
            ("payments", &remote.payments),
            ("loyalty", &remote.loyalty),
        ] {
            if let Some(url) = url {
                println!("demo-server: {name} at {url}");
            }
        }
        for (name, url, token) in [
            ("inventory", &remote.inventory, &remote.inventory_token),
            ("payments", &remote.payments, &remote.payments_token),
            ("loyalty", &remote.loyalty, &remote.loyalty_token),
        ] {
            if url.is_some() && token.is_none() {
                tracing::warn!(service = name, "no service token for this participant: calls go unauthenticated");
            }
        }
        match token_source {
            TokenSource::Generated if cli.print_admin_token => println!(
                "demo-server: admin token (shown once, kept in {}): {}",
                cli.data_dir
                    .join(demo_server::auth::ADMIN_TOKEN_FILE)
                    .display(),
                state.admin_token.reveal()
            ),
            TokenSource::Generated => println!(
                "demo-server: admin token generated and kept in {} (mode 0600; --print-admin-token shows it)",
                cli.data_dir
                    .join(demo_server::auth::ADMIN_TOKEN_FILE)
                    .display()
            ),
            TokenSource::Environment => println!(
                "demo-server: admin token from {}",
                demo_server::auth::ADMIN_TOKEN_ENV
            ),
            TokenSource::File | TokenSource::Given => println!(
                "demo-server: admin token in {}",
                cli.data_dir
                    .join(demo_server::auth::ADMIN_TOKEN_FILE)
                    .display()
            ),
        }
        println!("demo-server: listening on {scheme}://{addr}");
        demo_server::serve(listener, state, shutdown).await;
        Ok(())
    })
}

/// The engine's retention policy for `--retention DAYS` (0: none).
fn retention(days: u32) -> Option<saga_engine::Retention> {
    (days > 0).then(|| saga_engine::Retention::new(Duration::from_secs(u64::from(days) * 86_400)))
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: call it before telling anyone where the
/// server listens, or a signal sent at once would kill the process instead
/// of stopping it gracefully.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            let (mut int, mut term) = match (int, term) {
                (Ok(i), Ok(t)) => (i, t),
                (i, t) => {
                    tracing::error!(
                        sigint = i.is_ok(),
                        sigterm = t.is_ok(),
                        "cannot listen for signals"
                    );
                    return std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_currency(code: &str) -> Result<Currency, String> {
    let code = code.trim().to_ascii_uppercase();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(Currency(code))
    } else {
        Err(format!(
            "currency {code:?} is not a three-letter ISO 4217 code"
        ))
    }
}

/// `import --server`: the directory's files sent to a running server.
fn import_live(data_dir: &Path, server: &str, dir: &Path, currency: &str, mode: Mode) -> Fallible {
    let currency = parse_currency(currency)?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).map_err(|e| format!("{n}: {e}"));
    let airports = match names.iter().any(|n| n == "airports.csv") {
        true => Some(read("airports.csv")?),
        false => None,
    };
    let mut flights = Vec::new();
    for n in names
        .iter()
        .filter(|n| n.ends_with(".csv") && n.contains("flights"))
    {
        flights.push(read(n)?);
    }
    if airports.is_none() && flights.is_empty() {
        return Err(format!("no airports.csv or *flights*.csv in {}", dir.display()).into());
    }
    let body = serde_json::json!({
        "currency": currency.0,
        "mode": match mode { Mode::Skip => "skip", Mode::Reject => "reject" },
        "airports_csv": airports,
        "flights_csv": flights,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token = demo_server::cli::token(data_dir);
    let answer = runtime.block_on(demo_server::backup::client::admin_post(
        server,
        token,
        "/api/admin/catalog/import",
        Some(serde_json::to_vec(&body)?),
    ))?;
    let v: serde_json::Value = serde_json::from_slice(&answer)?;
    println!(
        "imported {} rows ({} airports, {} flights) into the running server; {} replaced, {} skipped; catalog: {} airports, {} flights",
        v["imported"], v["airports"], v["flights"], v["replaced"], v["skipped"],
        v["catalog"]["airports"], v["catalog"]["flights"]
    );
    for e in v["errors"].as_array().into_iter().flatten().take(20) {
        println!("  {}", e.as_str().unwrap_or_default());
    }
    Ok(())
}

fn import(data_dir: &Path, dir: &Path, currency: &str, mode: Mode) -> Fallible {
    let currency = parse_currency(currency)?;
    if booking_domain::pricing::usd_rate(&currency).is_none() {
        eprintln!(
            "warning: no fixed USD rate for {currency}: bookings priced in it earn no loyalty miles"
        );
    }
    std::fs::create_dir_all(data_dir)?;
    let db_path = data_dir.join(demo_server::state::DB_DIR);
    let fresh = !db_path.exists();
    let db = open_db(data_dir)?;
    let result = import_into(&db, dir, currency, mode);
    if result.is_err() && fresh {
        // Leave no empty catalog behind: the next start seeds the default one.
        drop(db);
        let _ = std::fs::remove_dir_all(&db_path);
    }
    result
}

fn import_into(db: &sled::Db, dir: &Path, currency: Currency, mode: Mode) -> Fallible {
    // A data directory without a catalog gets only what is imported.
    let mut catalog = Catalog::open_empty(db)?;
    let before = (catalog.airport_count(), catalog.flight_count());
    let mode = match mode {
        Mode::Skip => ImportMode::Skip,
        Mode::Reject => ImportMode::Reject,
    };
    let mut stderr = std::io::stderr();
    let report = Import::from_dir(dir, currency, mode)?
        .progress_every(500)
        .run(&mut catalog, &mut |p| {
            let pct = (p.rows_done * 100).checked_div(p.rows_total).unwrap_or(100);
            let _ = write!(
                stderr,
                "\rchecking rows: {}/{} ({pct}%)",
                p.rows_done, p.rows_total
            );
            let _ = stderr.flush();
        });
    eprintln!();
    let report = report?;
    db.flush()?;
    println!(
        "imported {} rows ({} airports, {} flights); {} replaced, {} duplicates, {} repaired flight numbers, {} disambiguated ids",
        report.imported, report.airports, report.flights, report.replaced, report.duplicates,
        report.repaired, report.disambiguated
    );
    if report.skipped > 0 {
        println!("skipped {} malformed rows:", report.skipped);
        for e in report.errors.iter().take(20) {
            println!("  {e}");
        }
        if report.errors.len() > 20 {
            println!("  ... and {} more", report.errors.len() - 20);
        }
    }
    println!(
        "catalog: {} airports (was {}), {} flights (was {})",
        catalog.airport_count(),
        before.0,
        catalog.flight_count(),
        before.1
    );
    Ok(())
}

fn export(data_dir: &Path, dir: &Path) -> Fallible {
    if !data_dir.join(demo_server::state::DB_DIR).exists() {
        return Err(format!(
            "no database in {}: start the server once or import first",
            data_dir.display()
        )
        .into());
    }
    let db = open_db(data_dir)?;
    let catalog = Catalog::open(&db)?;
    std::fs::create_dir_all(dir)?;
    let airports_path = dir.join("airports.csv");
    let flights_path = dir.join("flights.csv");
    eprint!("writing {} ... ", airports_path.display());
    let airports = export_airports(&catalog, std::fs::File::create(&airports_path)?)?;
    eprintln!("{airports} airports");
    eprint!("writing {} ... ", flights_path.display());
    let flights = export_flights(&catalog, std::fs::File::create(&flights_path)?)?;
    eprintln!("{flights} flights");
    println!(
        "exported {airports} airports and {flights} flights to {}",
        dir.display()
    );
    Ok(())
}
