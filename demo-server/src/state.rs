//! The state every request handler shares: the engine, the booking services,
//! the admin token, metrics, limits, and the "shutting down" signal.
//!
//! [`AppState::open`] does what the binary does at start: opens the sled
//! database in the data directory, loads the catalog (seeding the default
//! one the first time), opens the participants (local, or over HTTP for
//! those given a URL), registers the booking saga and opens the engine,
//! which resumes every saga left unfinished. [`AppState::from_parts`] puts
//! together state from pieces a test or an embedding program opened itself.

use crate::auth::{AdminToken, TokenError, TokenSource};
use crate::connections::{ConnLimits, ConnTracker};
use crate::limits::{RateLimiter, StreamTracker};
use crate::metrics::Metrics;
use crate::remote::{HttpInventory, HttpLoyalty, HttpPayments};
use crate::service_token::ServiceToken;
use booking_domain::booking_saga::{BookingServices, OpenError};
use booking_domain::catalog::{Catalog, CatalogError};
use saga_engine::{Engine, SledStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The name of the sled database directory inside the data directory.
pub const DB_DIR: &str = "db";

/// Limits and timeouts of the HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest request body read, in bytes (default 64 KiB).
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers (default 10 s).
    pub header_read_timeout: Duration,
    /// How long a client may take to send its request body (default 10 s).
    pub body_read_timeout: Duration,
    /// Interval of keep-alive comments on event streams (default 15 s).
    pub sse_keepalive: Duration,
    /// How long a shutdown waits for requests and saga steps under way
    /// (default 10 s).
    pub shutdown_grace: Duration,
    /// Connections open at once, all clients together (default 1024).
    pub max_connections: usize,
    /// Connections open at once from one client address (default 64).
    pub max_connections_per_client: usize,
    /// How long a write may make no progress before the connection is
    /// closed: a client that stopped reading (default 30 s).
    pub write_timeout: Duration,
    /// Event streams open at once, all clients together (default 256).
    pub max_streams: usize,
    /// Event streams open at once from one client address (default 16).
    pub max_streams_per_client: usize,
    /// Event streams open at once on one saga (default 8).
    pub max_streams_per_saga: usize,
    /// How long one event stream may stay open (default 30 min); a browser
    /// reconnects with `Last-Event-ID` and resumes.
    pub max_stream_lifetime: Duration,
    /// Requests per client address and minute for each rate-limited kind
    /// (booking creation, booking lookup, loyalty lookup, enrollment;
    /// default 60), with bursts of up to [`ServerConfig::rate_burst`].
    pub rate_per_minute: u32,
    /// The burst allowed above the steady rate (default 20).
    pub rate_burst: u32,
    /// Mark session cookies `Secure` even without [`ServerConfig::tls`]
    /// (default off; turn it on when a TLS terminator is in front). With
    /// `tls`, they are always `Secure`.
    pub secure_cookies: bool,
    /// How long a login lasts (default 12 h): the cookie's `Max-Age` and
    /// the session's expiry on the server.
    pub session_ttl: Duration,
    /// Login attempts per client address and minute, also the burst
    /// (default 10).
    pub login_per_minute: u32,
    /// Failed logins per account (from any address) in a burst, refilled
    /// at this many a minute (default 5).
    pub login_failures_per_account: u32,
    /// Serve HTTPS only, with this certificate (`--tls-cert`, `--tls-key`).
    pub tls: Option<crate::tls::TlsServer>,
    /// How long a booking waits for the customer's bank confirmation
    /// (`--payment-confirmation-timeout-secs`, default 600) and a held
    /// booking for its payment (`--hold-window-secs`, default 86400).
    pub booking_waits: booking_domain::booking_saga::BookingWaits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            sse_keepalive: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_client: 64,
            write_timeout: Duration::from_secs(30),
            max_streams: 256,
            max_streams_per_client: 16,
            max_streams_per_saga: 8,
            max_stream_lifetime: Duration::from_secs(30 * 60),
            rate_per_minute: 60,
            rate_burst: 20,
            secure_cookies: false,
            session_ttl: Duration::from_secs(12 * 60 * 60),
            login_per_minute: 10,
            login_failures_per_account: 5,
            tls: None,
            booking_waits: Default::default(),
        }
    }
}

impl ServerConfig {
    /// The connection limits of the accept loop.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections,
            max_per_client: self.max_connections_per_client,
            header_read_timeout: self.header_read_timeout,
            write_timeout: self.write_timeout,
            tls: self.tls.clone(),
        }
    }
}

/// Base URLs of participants reached over HTTP; `None` runs one locally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteParticipants {
    /// Inventory role server.
    pub inventory: Option<String>,
    /// Payments role server.
    pub payments: Option<String>,
    /// Loyalty role server.
    pub loyalty: Option<String>,
    /// The bearer token of the inventory service.
    pub inventory_token: Option<ServiceToken>,
    /// The bearer token of the payments service.
    pub payments_token: Option<ServiceToken>,
    /// The bearer token of the loyalty service.
    pub loyalty_token: Option<ServiceToken>,
    /// What `https://` participant URLs are trusted with (`--participant-ca`).
    pub tls: Option<crate::tls::TlsClient>,
}

/// Why the server state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The sled database could not be opened (another process may hold it).
    #[error("cannot open the database in {path} (is another demo-server using this data directory?): {source}")]
    Database {
        /// The database directory.
        path: PathBuf,
        /// The store error.
        #[source]
        source: saga_engine::StoreError,
    },
    /// The catalog could not be loaded.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A participant could not be opened.
    #[error(transparent)]
    Participants(#[from] OpenError),
    /// A participant URL is unusable.
    #[error("{0}")]
    ParticipantUrl(String),
    /// The engine could not be opened.
    #[error("cannot open the saga engine: {0}")]
    Engine(#[from] saga_engine::Error),
    /// The admin token could not be set up.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Configures and opens an [`AppState`] on a data directory.
#[derive(Debug, Clone)]
pub struct AppStateBuilder {
    data_dir: PathBuf,
    /// A shared saga store URL (`postgres://...`) instead of the embedded one.
    store_url: Option<String>,
    remote: RemoteParticipants,
    admin_token: Option<AdminToken>,
    config: ServerConfig,
    retention: Option<saga_engine::Retention>,
}

impl AppStateBuilder {
    /// Purges finished sagas past this policy's window in the background
    /// (`None`, the default: keep everything).
    pub fn retention(mut self, policy: Option<saga_engine::Retention>) -> Self {
        self.retention = policy;
        self
    }

    /// Reaches the participants with a URL over HTTP.
    pub fn remote(mut self, remote: RemoteParticipants) -> Self {
        self.remote = remote;
        self
    }

    /// Keeps the sagas in a shared store (`postgres://...`, with the
    /// `postgres` feature) instead of the embedded sled store, so several
    /// servers can share the work by lease. Participants stay where they are.
    pub fn store_url(mut self, url: Option<String>) -> Self {
        self.store_url = url;
        self
    }

    /// Uses this admin token instead of the environment's or the file's.
    pub fn admin_token(mut self, token: AdminToken) -> Self {
        self.admin_token = Some(token);
        self
    }

    /// Limits and timeouts.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens everything; see the module documentation.
    pub async fn open(self) -> Result<(Arc<AppState>, TokenSource), StartupError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| StartupError::DataDir {
            path: self.data_dir.clone(),
            source,
        })?;
        let db = open_db(&self.data_dir)?;
        let (token, source) = match self.admin_token {
            Some(t) => (t, TokenSource::Given),
            None => AdminToken::load_or_create(&self.data_dir)?,
        };
        let catalog = Arc::new(Catalog::open(&db)?);
        // With the engine on this database, the local participants share its
        // flushes: one flush covers a step's effect and its result.
        let (store, durability): (Arc<dyn saga_engine::Store>, _) = match &self.store_url {
            None => {
                // With the directory, the store keeps its high-water mark there and
                // refuses to run on a database that lost acknowledged records.
                let s = SledStore::with_db_at(db.clone(), self.data_dir.join(DB_DIR))
                    .map_err(saga_engine::Error::from)?;
                let d = s.durability();
                (Arc::new(s), Some(d))
            }
            Some(url) => (open_shared_store(url).await?, None),
        };
        let mut services = match &durability {
            Some(d) => BookingServices::local_on_engine_db(&db, &self.data_dir, catalog, d)?,
            None => BookingServices::local_in(&db, &self.data_dir, catalog)?,
        };
        let url_err =
            |e: crate::remote::InvalidBaseUrl| StartupError::ParticipantUrl(e.to_string());
        if let Some(url) = &self.remote.inventory {
            services.inventory = Arc::new(
                match &self.remote.tls {
                    Some(tls) => HttpInventory::with_tls(url, tls),
                    None => HttpInventory::new(url),
                }
                .map_err(url_err)?
                .with_token(self.remote.inventory_token.clone()),
            );
        }
        if let Some(url) = &self.remote.payments {
            services.payments = Arc::new(
                match &self.remote.tls {
                    Some(tls) => HttpPayments::with_tls(url, tls),
                    None => HttpPayments::new(url),
                }
                .map_err(url_err)?
                .with_token(self.remote.payments_token.clone()),
            );
        }
        if let Some(url) = &self.remote.loyalty {
            services.loyalty = Arc::new(
                match &self.remote.tls {
                    Some(tls) => HttpLoyalty::with_tls(url, tls),
                    None => HttpLoyalty::new(url),
                }
                .map_err(url_err)?
                .with_token(self.remote.loyalty_token.clone()),
            );
        }
        services.waits = self.config.booking_waits;
        // Every participant and store write passes the backup's barrier.
        let barrier = crate::backup::gate::WriteBarrier::new();
        {
            use crate::backup::gate::{GatedInventory, GatedLoyalty, GatedPayments};
            services.inventory =
                Arc::new(GatedInventory(services.inventory.clone(), barrier.clone()));
            services.payments = Arc::new(GatedPayments(services.payments.clone(), barrier.clone()));
            services.loyalty = Arc::new(GatedLoyalty(services.loyalty.clone(), barrier.clone()));
        }
        let store: Arc<dyn saga_engine::Store> =
            Arc::new(crate::backup::gate::GatedStore::new(store, barrier.clone()));
        let mut engine = Engine::builder_arc(store);
        if let Some(policy) = &self.retention {
            engine = engine.retention(policy.clone());
        }
        // Every version of the booking saga: in-flight sagas of an earlier
        // one resume with their own steps.
        for def in booking_domain::booking_saga::booking_definitions(&services) {
            engine = engine.register(def);
        }
        let engine = engine
            .register(booking_domain::cancellation::cancellation_definition(
                &services,
            ))
            .open()
            .await?;
        // Bookings a crash caught between their start and their automatic
        // wait signals get them now.
        booking_domain::booking_saga::resume_waits(&engine).await?;
        let state = AppState::assemble(
            engine,
            services,
            db,
            token,
            self.config,
            self.retention,
            barrier,
        );
        Ok((state, source))
    }
}

#[cfg(feature = "postgres")]
async fn open_shared_store(url: &str) -> Result<Arc<dyn saga_engine::Store>, StartupError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StartupError::ParticipantUrl(format!(
            "--store {url}: expected a postgres:// URL"
        )));
    }
    let store = saga_engine::PostgresStore::connect(url)
        .await
        .map_err(saga_engine::Error::from)?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_shared_store(url: &str) -> Result<Arc<dyn saga_engine::Store>, StartupError> {
    Err(StartupError::ParticipantUrl(format!(
        "--store {url}: this build has no PostgreSQL support (build with --features postgres)"
    )))
}

/// Opens the sled database of a data directory.
///
/// Goes through `saga_engine::store::open_sled_db`, which clears the
/// half-written snapshot a crash can leave (a sled 0.34 recovery bug).
pub fn open_db(data_dir: &Path) -> Result<sled::Db, StartupError> {
    let path = data_dir.join(DB_DIR);
    saga_engine::store::open_sled_db(&path)
        .map_err(|source| StartupError::Database { path, source })
}

/// What handlers share.
pub struct AppState {
    /// The saga engine.
    pub engine: Engine,
    /// Catalog, participants, bookings, fault switches.
    pub services: BookingServices,
    /// The database (flushed at shutdown).
    pub db: sled::Db,
    /// The admin token.
    pub admin_token: AdminToken,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Limits and timeouts.
    pub config: ServerConfig,
    /// Open connections per client address.
    pub connections: Arc<ConnTracker>,
    /// Open event streams per client address and saga.
    pub streams: Arc<StreamTracker>,
    /// Request rates per client address.
    pub rates: RateLimiter,
    /// Traveller accounts, sessions and trips.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Sagas started, completed and compensated per bucket (the admin overview).
    pub saga_rates: Arc<crate::overview::Rates>,
    /// The engine's retention policy, if finished sagas are purged.
    pub retention: Option<saga_engine::Retention>,
    /// The barrier a backup takes: the store's and participants' writes
    /// pass it ([`AppState::open`] wraps them; parts given to
    /// [`AppState::from_parts`] are not, so their backups are not taken at
    /// a consistent point unless the caller wrapped them in
    /// [`crate::backup::gate`]).
    pub barrier: Arc<crate::backup::gate::WriteBarrier>,
    /// The engine's live events, by saga, for the event streams.
    pub saga_events: Arc<crate::sse_hub::SagaEventHub>,
    stopping: watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engine", &self.engine)
            .field("config", &self.config)
            .field("stopping", &self.is_stopping())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Starts configuring state on `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> AppStateBuilder {
        AppStateBuilder {
            data_dir: data_dir.into(),
            store_url: None,
            remote: RemoteParticipants::default(),
            admin_token: None,
            config: ServerConfig::default(),
            retention: None,
        }
    }

    /// Opens state on `data_dir` with every participant local and default
    /// limits; the admin token comes from the environment or the token file.
    pub async fn open(data_dir: impl Into<PathBuf>) -> Result<Arc<AppState>, StartupError> {
        Ok(Self::builder(data_dir).open().await?.0)
    }

    /// State from parts opened elsewhere. `engine` must have the booking
    /// saga of `services` registered. Must be called inside a tokio runtime
    /// (it starts the metrics collector).
    ///
    /// # Panics
    ///
    /// If the account trees cannot be opened in `db` (a storage failure).
    pub fn from_parts(
        engine: Engine,
        services: BookingServices,
        db: sled::Db,
        admin_token: AdminToken,
        config: ServerConfig,
    ) -> Arc<AppState> {
        let barrier = crate::backup::gate::WriteBarrier::new();
        Self::assemble(engine, services, db, admin_token, config, None, barrier)
    }

    fn assemble(
        engine: Engine,
        services: BookingServices,
        db: sled::Db,
        admin_token: AdminToken,
        config: ServerConfig,
        retention: Option<saga_engine::Retention>,
        barrier: Arc<crate::backup::gate::WriteBarrier>,
    ) -> Arc<AppState> {
        let accounts = crate::accounts::Accounts::open(
            &db,
            config.session_ttl,
            crate::accounts::LoginThrottle::new(
                config.login_per_minute,
                config.login_failures_per_account,
            ),
        )
        .expect("the account trees open in the server's database");
        let metrics = Arc::new(Metrics::new());
        let (stopping, stop_rx) = watch::channel(false);
        let saga_rates = Arc::new(crate::overview::Rates::new());
        crate::overview::spawn_sampler(&engine, saga_rates.clone(), stop_rx.clone());
        crate::metrics::spawn_collector(&engine, metrics.clone(), stop_rx);
        let saga_events = crate::sse_hub::SagaEventHub::start(&engine);
        Arc::new(AppState {
            saga_events,
            engine,
            services,
            db,
            admin_token,
            metrics,
            connections: Arc::new(ConnTracker::default()),
            streams: Arc::new(StreamTracker::new(&config)),
            rates: RateLimiter::new(config.rate_per_minute, config.rate_burst),
            accounts: Arc::new(accounts),
            saga_rates,
            retention,
            barrier,
            config,
            stopping,
        })
    }

    /// True once shutdown began.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Marks the server as shutting down: readiness fails, event streams end.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// A receiver that turns `true` when shutdown begins.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}
