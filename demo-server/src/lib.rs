//! # demo-server: the flight booking demo over HTTP
//!
//! A hyper 1.x server in front of the saga engine and the booking domain:
//! a JSON API (search, book, follow a booking live, manage it, loyalty),
//! server-sent events of each saga's progress, an embedded web page with no
//! build step, operator endpoints behind a bearer token, health, readiness
//! and Prometheus metrics, and request limits (64 KiB bodies, header and
//! body read deadlines).
//!
//! The library is shaped like mini-redis and axum: [`serve`] takes a bound
//! listener, the shared [`AppState`] and a shutdown future, so a test binds
//! `127.0.0.1:0`, serves, and stops it; the binary (`main.rs`) only parses
//! flags, opens the state and installs signal handlers.
//!
//! | module | owns |
//! | --- | --- |
//! | [`server`] | the main server and its graceful shutdown |
//! | [`limits`] | event stream caps and per-client request rates |
//! | [`connections`] | the accept loop both servers share: connection caps, timeouts |
//! | [`routes`] | the route table and dispatch |
//! | [`api`] | JSON shapes and the one `ApiError -> Response` mapping |
//! | `handlers` | one file per area: catalog, bookings, loyalty, admin, ops |
//! | [`sse`] | server-sent event streams |
//! | [`openapi`] | the OpenAPI 3 document of every route |
//! | [`public_text`] | failure texts as the public sees them (no internal URLs or paths) |
//! | [`state`] | [`AppState`]: engine, services, token, metrics, limits |
//! | [`backup`] | backup and restore of every record, at a consistent point (a write barrier) |
//! | [`accounts`] | traveller accounts: passwords, sessions and CSRF, login throttling, my trips |
//! | [`auth`] | the admin token |
//! | [`metrics`] | Prometheus counters and histograms |
//! | [`roles`], [`remote`] | one participant served alone, and its HTTP client |
//! | [`service_token`] | the bearer token between the orchestrator and a participant |
//! | [`cli`] | `demo-server sagas ...`: the operator's command line |
//! | [`saga_pages`] | newest-first pages of sagas with a cursor |
//! | [`overview`] | sagas per second for the admin page's live overview |
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let state = demo_server::AppState::open("./data").await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! demo_server::serve(listener, state, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! # Ok(()) }
//! ```

pub mod accounts;
pub mod api;
pub mod auth;
pub mod backup;
pub mod body;
pub mod cli;
pub mod connections;
mod handlers;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod overview;
pub mod public_text;
pub mod query;
pub mod remote;
pub mod roles;
pub mod routes;
pub mod saga_pages;
pub mod server;
pub mod service_token;
pub mod sse;
pub mod sse_hub;
pub mod state;
pub mod tls;
pub mod trace_context;
pub mod ui;

pub use api::ApiError;
pub use auth::{AdminToken, TokenSource};
pub use body::Body;
pub use server::serve;
pub use service_token::ServiceToken;
pub use state::{AppState, AppStateBuilder, RemoteParticipants, ServerConfig, StartupError};
