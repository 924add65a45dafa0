//! `demo-server sagas ...`: the operator's command line. It talks to a
//! running server's admin API (`--server`, token from `DEMO_ADMIN_TOKEN` or
//! the data directory's `admin_token`); when no server answers, the read
//! commands (`list`, `show`, `history`, `export`) open the data directory
//! themselves, without an engine (see [`offline`]). Tables by default,
//! `--json` for scripts; `export` writes JSON Lines.
//!
//! The operator operations (pause, resume, retry-now, skip, rerun,
//! cancel) are in [`operate`]: one variant of [`SagasCommand`] and one
//! admin route each.

mod client;
mod offline;
mod operate;
mod render;

pub use operate::OpFlags;
use operate::{Op, Target};

use crate::saga_pages::PageQuery;
use clap::{Args, Subcommand};
use client::AdminClient;
use offline::Offline;
use saga_engine::{SagaId, SagaStatus};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// Why a `sagas` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag or argument is unusable.
    #[error("{0}")]
    Usage(String),
    /// No server answers (and, for a read, the data directory could not be read either).
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the admin token.
    #[error("{0}")]
    Auth(String),
    /// No such saga.
    #[error("{0}")]
    NotFound(String),
    /// The server refused the operation.
    #[error("refused ({status}): {message}{}", fields.as_ref().map(|f| format!(" {f}")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// Field errors, if any.
        fields: Option<Value>,
    },
    /// The server or the store failed.
    #[error("{0}")]
    Server(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// `demo-server sagas`: list, inspect and operate sagas.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  demo-server sagas list --status stuck\n  demo-server sagas show 018f3a...\n  demo-server --data-dir ./data sagas export --out sagas.jsonl"
)]
pub struct SagasArgs {
    /// The running server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Print the admin API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: SagasCommand,
}

/// Filters shared by `list` and `export`.
#[derive(Debug, Clone, Args)]
pub struct Filters {
    /// Only sagas with this status: running, compensating, completed,
    /// compensated, stuck or paused.
    #[arg(long)]
    pub status: Option<String>,
    /// Only sagas of this definition (booking, cancellation).
    #[arg(long)]
    pub definition: Option<String>,
    /// Only sagas created at least this long ago (90s, 30m, 2h, 7d).
    #[arg(long, value_parser = parse_age)]
    pub older_than: Option<u64>,
    /// Only sagas created at most this long ago (90s, 30m, 2h, 7d).
    #[arg(long, value_parser = parse_age)]
    pub newer_than: Option<u64>,
    /// Only sagas whose search attribute has this value, as name=value
    /// (reference=ABC123, departure=2026-12-24, email=ann@example.com: an
    /// address is hashed before it leaves this process).
    #[arg(long)]
    pub attr: Option<String>,
    /// Only overdue sagas: past their deadline after the pivot (they go
    /// on, late) and not finished yet.
    #[arg(long)]
    pub overdue: bool,
}

/// The `sagas` subcommands.
#[derive(Debug, Subcommand)]
pub enum SagasCommand {
    /// List sagas, newest first, a page at a time.
    #[command(
        after_help = "Example:\n  demo-server sagas list --status compensated --newer-than 2h --limit 20\n  demo-server sagas list --attr reference=K7QX2M\n  demo-server sagas list --overdue\n  demo-server sagas list --cursor 018f3a...   (the next page, as the last line says)"
    )]
    List {
        /// Filters.
        #[command(flatten)]
        filters: Filters,
        /// Sagas on the page (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this saga (the `--cursor` the previous page printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one saga: status, steps, failure, idempotency key.
    #[command(after_help = "Example:\n  demo-server sagas show 018f3a2b1c4d9e8f7a6b5c4d3e2f")]
    Show {
        /// The saga id.
        id: String,
    },
    /// Show one saga's history, every event in order.
    #[command(
        after_help = "Example:\n  demo-server sagas history 018f3a2b1c4d9e8f7a6b5c4d3e2f --json"
    )]
    History {
        /// The saga id.
        id: String,
    },
    /// Retry a stuck saga: its failed compensation gets a fresh round of
    /// attempts, or its stuck forward step runs again; recorded with the
    /// operator and the reason (needs a running server).
    #[command(
        after_help = "Example:\n  demo-server sagas retry 018f3a2b1c4d9e8f7a6b5c4d3e2f --dry-run\n  demo-server sagas retry 018f3a2b1c4d9e8f7a6b5c4d3e2f --operator ada --reason \"seat map fixed\""
    )]
    Retry {
        /// The saga id.
        id: String,
        /// Operator, reason, operation id, dry run.
        #[command(flatten)]
        flags: OpFlags,
    },
    /// Cancel a saga: it stops and compensates what it did (a running saga
    /// before its pivot, or one stuck forward on a pivot that never
    /// succeeded); needs a running server.
    #[command(
        after_help = "Example:\n  demo-server sagas cancel 018f3a2b1c4d9e8f7a6b5c4d3e2f --dry-run\n  demo-server sagas cancel 018f3a2b1c4d9e8f7a6b5c4d3e2f --reason \"fare withdrawn\" --operator ada"
    )]
    Cancel {
        /// The saga id.
        id: String,
        /// Operator, reason, operation id, dry run.
        #[command(flatten)]
        flags: OpFlags,
    },
    /// Pause a saga (or, with --definition, every running saga of a
    /// definition): no step starts and no timer fires until it is resumed;
    /// a step under way finishes. Needs a running server.
    #[command(
        after_help = "Example:\n  demo-server sagas pause 018f3a2b1c4d9e8f7a6b5c4d3e2f --reason \"payment provider down\" --operator ada\n  demo-server sagas pause --definition booking --dry-run"
    )]
    Pause {
        /// The saga id (or give --definition).
        id: Option<String>,
        /// Every saga of this definition instead of one.
        #[arg(long)]
        definition: Option<String>,
        /// Operator, reason, operation id, dry run.
        #[command(flatten)]
        flags: OpFlags,
    },
    /// Resume a paused saga where it stood (or, with --definition, every
    /// paused saga of a definition). Needs a running server.
    #[command(
        after_help = "Example:\n  demo-server sagas resume 018f3a2b1c4d9e8f7a6b5c4d3e2f --reason \"provider back\"\n  demo-server sagas resume --definition booking"
    )]
    Resume {
        /// The saga id (or give --definition).
        id: Option<String>,
        /// Every paused saga of this definition instead of one.
        #[arg(long)]
        definition: Option<String>,
        /// Operator, reason, operation id, dry run.
        #[command(flatten)]
        flags: OpFlags,
    },
    /// Wake a saga waiting in backoff (a retry, or a compensation retry)
    /// now. Needs a running server.
    #[command(
        name = "retry-now",
        after_help = "Example:\n  demo-server sagas retry-now 018f3a2b1c4d9e8f7a6b5c4d3e2f --reason \"provider back\""
    )]
    RetryNow {
        /// The saga id.
        id: String,
        /// Operator, reason, operation id, dry run.
        #[command(flatten)]
        flags: OpFlags,
    },
    /// Skip the step the saga stands on, which the operator did by hand:
    /// it counts as succeeded and --result (a JSON object) is merged into
    /// the saga's data. Only before the pivot. Needs a running server.
    #[command(
        after_help = "Example:\n  demo-server sagas skip 018f3a2b1c4d9e8f7a6b5c4d3e2f --step award_miles --result '{}' --reason \"miles added by hand\""
    )]
    Skip {
        /// The saga id.
        id: String,
        /// The step's name.
        #[arg(long)]
        step: String,
        /// What the step would have written into the data, a JSON object.
        #[arg(long, default_value = "{}")]
        result: String,
        /// Operator, reason, operation id, dry run.
        #[command(flatten)]
        flags: OpFlags,
    },
    /// Re-run a saga that ended compensated or stuck from a step, as a new
    /// saga (linked to this one both ways) with this one's data. Needs a
    /// running server.
    #[command(
        after_help = "Example:\n  demo-server sagas rerun 018f3a2b1c4d9e8f7a6b5c4d3e2f --from-step authorize_payment --dry-run"
    )]
    Rerun {
        /// The saga id.
        id: String,
        /// The step the new saga starts at.
        #[arg(long)]
        from_step: String,
        /// Operator, reason, operation id, dry run.
        #[command(flatten)]
        flags: OpFlags,
    },
    /// Purge finished sagas past the retention window now (needs a running
    /// server); stuck and running sagas are never purged.
    #[command(
        after_help = "Example:\n  demo-server sagas purge --dry-run\n  demo-server sagas purge --older-than 7d"
    )]
    Purge {
        /// Only say how many would go.
        #[arg(long)]
        dry_run: bool,
        /// Purge what finished longer ago than this (90s, 30m, 2h, 7d)
        /// instead of the server's --retention window.
        #[arg(long, value_parser = parse_age)]
        older_than: Option<u64>,
    },
    /// Write sagas (summary, data, history) as JSON Lines, one saga a line.
    #[command(
        after_help = "Example:\n  demo-server sagas export --status completed --out completed.jsonl"
    )]
    Export {
        /// Filters.
        #[command(flatten)]
        filters: Filters,
        /// File to write (standard output if left out).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// `90`, `90s`, `30m`, `2h`, `7d` as seconds.
fn parse_age(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and s, m, h or d (30m, 2h, 7d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(n.saturating_mul(mult))
}

fn page_query(f: &Filters, limit: usize, cursor: Option<&str>) -> Result<PageQuery, CliError> {
    let status = match f.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(SagaStatus::parse(s).ok_or_else(|| {
            CliError::Usage(format!(
                "--status {s:?}: expected running, compensating, completed, compensated, stuck or paused"
            ))
        })?),
    };
    if !(1..=1000).contains(&limit) {
        return Err(CliError::Usage("--limit must be 1 to 1000".into()));
    }
    let cursor = match cursor {
        None => None,
        Some(c) => Some(
            SagaId::parse(c)
                .ok_or_else(|| CliError::Usage(format!("--cursor {c:?} is not a saga id")))?,
        ),
    };
    let now = crate::overview::now_ms();
    Ok(PageQuery {
        status,
        definition: f.definition.clone(),
        created_before_ms: f.older_than.map(|s| now.saturating_sub(s * 1000)),
        created_after_ms: f.newer_than.map(|s| now.saturating_sub(s * 1000)),
        attribute: attr_filter(f)?,
        overdue: f.overdue,
        cursor,
        limit,
    })
}

/// `--attr name=value`, checked, an address already hashed.
fn attr_filter(f: &Filters) -> Result<Option<(String, String)>, CliError> {
    f.attr
        .as_deref()
        .map(|a| {
            crate::saga_pages::attribute(a, '=')
                .map_err(|e| CliError::Usage(format!("--attr: {e}")))
        })
        .transpose()
}

/// The query string of `GET /api/admin/sagas` for `f`.
fn list_path(f: &Filters, limit: usize, cursor: Option<&str>) -> String {
    let mut q = vec![format!("limit={limit}")];
    let enc = crate::roles::encode_component;
    if let Ok(Some((n, v))) = attr_filter(f) {
        q.push(format!("attr={}", enc(&format!("{n}:{v}"))));
    }
    if let Some(s) = &f.status {
        q.push(format!("status={}", enc(s)));
    }
    if let Some(d) = &f.definition {
        q.push(format!("definition={}", enc(d)));
    }
    if let Some(s) = f.older_than {
        q.push(format!("older_than={s}"));
    }
    if let Some(s) = f.newer_than {
        q.push(format!("newer_than={s}"));
    }
    if f.overdue {
        q.push("overdue=true".into());
    }
    if let Some(c) = cursor {
        q.push(format!("cursor={}", enc(c)));
    }
    format!("/api/admin/sagas?{}", q.join("&"))
}

/// Where the reads go.
enum Source {
    Api(AdminClient),
    Offline(Offline),
}

impl Source {
    async fn list(
        &self,
        f: &Filters,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Value, CliError> {
        match self {
            Source::Api(c) => {
                attr_filter(f)?;
                c.get(&list_path(f, limit, cursor)).await
            }
            Source::Offline(o) => o.list(&page_query(f, limit, cursor)?).await,
        }
    }

    async fn show(&self, id: &str) -> Result<Value, CliError> {
        match self {
            Source::Api(c) => {
                c.get(&format!(
                    "/api/admin/sagas/{}",
                    crate::roles::encode_component(id)
                ))
                .await
            }
            Source::Offline(o) => o.show(id).await,
        }
    }

    async fn history(&self, id: &str) -> Result<Value, CliError> {
        match self {
            Source::Api(c) => {
                c.get(&format!(
                    "/api/admin/sagas/{}/history",
                    crate::roles::encode_component(id)
                ))
                .await
            }
            Source::Offline(o) => o.history(id).await,
        }
    }
}

/// The admin token: `DEMO_ADMIN_TOKEN`, else the data directory's file.
pub fn token(data_dir: &Path) -> Option<String> {
    if let Ok(t) = std::env::var(crate::auth::ADMIN_TOKEN_ENV) {
        if !t.trim().is_empty() {
            return Some(t.trim().to_string());
        }
    }
    std::fs::read_to_string(data_dir.join(crate::auth::ADMIN_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Runs one `sagas` command; results go to `out`, notes (reading the data
/// directory because no server answered) to `note`.
pub fn run(
    args: &SagasArgs,
    data_dir: &Path,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, data_dir, out, note))
}

fn print_json(out: &mut dyn Write, v: &Value) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, v).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

async fn run_async(
    args: &SagasArgs,
    data_dir: &Path,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<(), CliError> {
    let client = AdminClient::new(&args.server, token(data_dir))?;
    let writes = !matches!(
        args.command,
        SagasCommand::List { .. }
            | SagasCommand::Show { .. }
            | SagasCommand::History { .. }
            | SagasCommand::Export { .. }
    );
    // Is a server there? (`/healthz` needs no token.)
    let source = match client.get("/healthz").await {
        Ok(_) => Source::Api(client),
        Err(CliError::Unreachable(why)) if writes => {
            return Err(CliError::Unreachable(format!(
                "no server answers at {why}; operations (retry, cancel, pause, resume, retry-now, skip, rerun, purge) need the running server (start it, or pass --server URL)"
            )))
        }
        Err(CliError::Unreachable(_)) => {
            let o = Offline::open(data_dir, client.base())?;
            writeln!(
                note,
                "note: no server answers at {}: reading {} directly",
                client.base(),
                data_dir.display()
            )?;
            Source::Offline(o)
        }
        Err(e) => return Err(e),
    };
    let now = crate::overview::now_ms();
    match &args.command {
        SagasCommand::List {
            filters,
            limit,
            cursor,
        } => {
            page_query(filters, *limit, cursor.as_deref())?; // check flags before any call
            let page = source.list(filters, *limit, cursor.as_deref()).await?;
            if args.json {
                print_json(out, &page)?;
            } else {
                render::saga_list(out, &page, now)?;
            }
        }
        SagasCommand::Show { id } => {
            let v = source.show(id).await?;
            if args.json {
                print_json(out, &v)?;
            } else {
                render::saga(out, &v)?;
            }
        }
        SagasCommand::History { id } => {
            let v = source.history(id).await?;
            if args.json {
                print_json(out, &v)?;
            } else {
                render::history(out, &v)?;
            }
        }
        SagasCommand::Cancel { id, flags } => {
            let Source::Api(c) = &source else {
                unreachable!("writes need the server")
            };
            operate::run(c, &Op::Cancel(id.clone()), flags, args.json, out).await?;
        }
        SagasCommand::Pause {
            id,
            definition,
            flags,
        }
        | SagasCommand::Resume {
            id,
            definition,
            flags,
        } => {
            let Source::Api(c) = &source else {
                unreachable!("writes need the server")
            };
            let target = Target::new(id.clone(), definition.clone())?;
            let op = if matches!(args.command, SagasCommand::Pause { .. }) {
                Op::Pause(target)
            } else {
                Op::Resume(target)
            };
            operate::run(c, &op, flags, args.json, out).await?;
        }
        SagasCommand::RetryNow { id, flags } => {
            let Source::Api(c) = &source else {
                unreachable!("writes need the server")
            };
            operate::run(c, &Op::RetryNow(id.clone()), flags, args.json, out).await?;
        }
        SagasCommand::Skip {
            id,
            step,
            result,
            flags,
        } => {
            let Source::Api(c) = &source else {
                unreachable!("writes need the server")
            };
            let op = Op::Skip {
                id: id.clone(),
                step: step.clone(),
                result: result.clone(),
            };
            operate::run(c, &op, flags, args.json, out).await?;
        }
        SagasCommand::Rerun {
            id,
            from_step,
            flags,
        } => {
            let Source::Api(c) = &source else {
                unreachable!("writes need the server")
            };
            let op = Op::Rerun {
                id: id.clone(),
                from_step: from_step.clone(),
            };
            operate::run(c, &op, flags, args.json, out).await?;
        }
        SagasCommand::Retry { id, flags } => {
            let Source::Api(c) = &source else {
                unreachable!("writes need the server")
            };
            operate::run(c, &Op::Retry(id.clone()), flags, args.json, out).await?;
        }
        SagasCommand::Purge {
            dry_run,
            older_than,
        } => {
            let Source::Api(c) = &source else {
                unreachable!("writes need the server")
            };
            let mut body = json!({ "dry_run": dry_run });
            if let Some(s) = older_than {
                body["older_than_secs"] = json!(s);
            }
            let v = c.post("/api/admin/purge", &body).await?;
            if args.json {
                print_json(out, &v)?;
            } else if *dry_run {
                writeln!(
                    out,
                    "dry run: {}{} finished sagas that ended over {} ago would be purged (nothing was deleted)",
                    if v["at_least"] == json!(true) { "at least " } else { "" },
                    v["would_purge"],
                    render::span(v["older_than_secs"].as_u64().unwrap_or(0))
                )?;
            } else {
                writeln!(
                    out,
                    "purged {} finished sagas that ended over {} ago; {} retired idempotency keys forgotten",
                    v["purged"],
                    render::span(v["older_than_secs"].as_u64().unwrap_or(0)),
                    v["keys_forgotten"]
                )?;
            }
        }
        SagasCommand::Export { filters, out: file } => {
            page_query(filters, 200, None)?;
            let mut sink: Box<dyn Write> = match file {
                Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
                None => Box::new(&mut *out),
            };
            let mut cursor: Option<String> = None;
            let mut n = 0usize;
            loop {
                let page = source.list(filters, 200, cursor.as_deref()).await?;
                for s in page["sagas"].as_array().into_iter().flatten() {
                    let id = s["id"].as_str().unwrap_or_default();
                    let mut line = source.show(id).await?;
                    line["history"] = source.history(id).await?["events"].take();
                    serde_json::to_writer(&mut sink, &line).map_err(std::io::Error::from)?;
                    writeln!(sink)?;
                    n += 1;
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            sink.flush()?;
            drop(sink);
            if let Some(p) = file {
                writeln!(note, "exported {n} sagas to {}", p.display())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90"), Ok(90));
        assert_eq!(parse_age("30m"), Ok(1800));
        assert_eq!(parse_age("2h"), Ok(7200));
        assert_eq!(parse_age("7d"), Ok(604_800));
        assert!(parse_age("7w").is_err());
        assert!(parse_age("h").is_err());
    }
}
