//! `demo-server sagas pause|resume|retry-now|retry|skip|rerun|cancel`: the
//! operator operations, through the admin API (they need the running
//! server). Each takes `--operator`, `--reason` and `--operation-id`
//! (generated when left out, and printed, so the same operation can be
//! repeated safely), and `--dry-run` to see which steps would run or be
//! compensated, in which order, without changing anything.

use super::client::AdminClient;
use super::render;
use super::CliError;
use clap::Args;
use serde_json::{json, Value};
use std::io::Write;

/// Flags every operation takes.
#[derive(Debug, Clone, Args)]
pub struct OpFlags {
    /// Only say what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Who asks (recorded in the saga's history). Default: $USER.
    #[arg(long)]
    pub operator: Option<String>,
    /// Why (recorded in the saga's history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The operation's id: repeating it returns the first result instead of
    /// doing it again. Default: a new random id (printed).
    #[arg(long)]
    pub operation_id: Option<String>,
}

/// One operation: the route's verb and what the body adds.
#[derive(Debug, Clone)]
pub enum Op {
    /// `pause` one saga (`Some(id)`) or a definition's sagas.
    Pause(Target),
    /// `resume` one saga or a definition's sagas.
    Resume(Target),
    /// `retry-now`.
    RetryNow(String),
    /// `retry` of a stuck saga.
    Retry(String),
    /// `skip` a step with a result.
    Skip {
        /// The saga.
        id: String,
        /// The step.
        step: String,
        /// The result, as JSON text.
        result: String,
    },
    /// `rerun` from a step.
    Rerun {
        /// The saga.
        id: String,
        /// The step.
        from_step: String,
    },
    /// `cancel`: force compensation.
    Cancel(String),
}

/// One saga, or every saga of a definition.
#[derive(Debug, Clone)]
pub enum Target {
    /// A saga id.
    Saga(String),
    /// A definition's name.
    Definition(String),
}

impl Target {
    /// From the command's id argument and `--definition`.
    pub fn new(id: Option<String>, definition: Option<String>) -> Result<Target, CliError> {
        match (id, definition) {
            (Some(id), None) => Ok(Target::Saga(id)),
            (None, Some(d)) => Ok(Target::Definition(d)),
            _ => Err(CliError::Usage(
                "give a saga id or --definition NAME (one of the two)".into(),
            )),
        }
    }
}

fn body(flags: &OpFlags, default_reason: &str) -> (Value, String) {
    let operation_id = flags
        .operation_id
        .clone()
        .unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
    let operator = flags
        .operator
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|o| !o.trim().is_empty())
        .unwrap_or_else(|| "cli".into());
    let reason = flags
        .reason
        .clone()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| default_reason.to_string());
    (
        json!({ "operator": operator, "reason": reason, "operation_id": operation_id, "dry_run": flags.dry_run }),
        operation_id,
    )
}

fn saga_path(id: &str, verb: &str) -> String {
    format!(
        "/api/admin/sagas/{}/{verb}",
        crate::roles::encode_component(id)
    )
}

/// Runs `op` against the server; prints a table or the JSON.
pub async fn run(
    c: &AdminClient,
    op: &Op,
    flags: &OpFlags,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (mut b, operation_id) = body(flags, "operator action from the command line");
    let (path, verb) = match op {
        Op::Pause(Target::Definition(d)) | Op::Resume(Target::Definition(d)) => {
            b["definition"] = json!(d);
            let verb = if matches!(op, Op::Pause(_)) {
                "pause"
            } else {
                "resume"
            };
            let v = c
                .post(&format!("/api/admin/definitions/{verb}"), &b)
                .await?;
            if as_json {
                return super::print_json(out, &v);
            }
            return bulk(out, verb, d, &v, flags.dry_run);
        }
        Op::Pause(Target::Saga(id)) => (saga_path(id, "pause"), "pause"),
        Op::Resume(Target::Saga(id)) => (saga_path(id, "resume"), "resume"),
        Op::RetryNow(id) => (saga_path(id, "retry-now"), "retry-now"),
        Op::Retry(id) => (saga_path(id, "retry"), "retry"),
        Op::Cancel(id) => (saga_path(id, "force-compensate"), "cancel"),
        Op::Skip { id, step, result } => {
            let r: Value = serde_json::from_str(result)
                .map_err(|e| CliError::Usage(format!("--result {result:?} is not JSON: {e}")))?;
            b["step"] = json!(step);
            b["result"] = r;
            (saga_path(id, "skip"), "skip")
        }
        Op::Rerun { id, from_step } => {
            b["from_step"] = json!(from_step);
            (saga_path(id, "rerun"), "rerun")
        }
    };
    let v = c.post(&path, &b).await?;
    if as_json {
        return super::print_json(out, &v);
    }
    outcome(out, verb, &operation_id, &v)
}

/// The outcome of one operation, readable.
fn outcome(out: &mut dyn Write, verb: &str, operation_id: &str, v: &Value) -> Result<(), CliError> {
    let id = v["saga_id"].as_str().unwrap_or("?");
    let status = v["status"].as_str().unwrap_or("?");
    if v["applied"] == json!(false) {
        writeln!(out, "dry run: {verb} of saga {id} (nothing was changed)")?;
    } else if v["repeated"] == json!(true) {
        writeln!(
            out,
            "{verb} was already applied under operation id {operation_id}: saga {id} is {status}"
        )?;
    } else {
        writeln!(
            out,
            "{verb} applied: saga {id} is {status} (operation id {operation_id})"
        )?;
    }
    if let Some(new) = v["new_saga"].as_str() {
        writeln!(out, "new saga: {new}")?;
    }
    plan(out, &v["plan"], v["applied"] == json!(false))
}

/// The plan: which steps run or are compensated, in order.
fn plan(out: &mut dyn Write, p: &Value, dry: bool) -> Result<(), CliError> {
    let steps = p["steps"].as_array().cloned().unwrap_or_default();
    let held = p["held_after"].as_u64().map(|n| n as usize);
    let lead = if dry { "would then" } else { "then" };
    if steps.is_empty() && held.is_none() {
        writeln!(out, "{lead}: nothing left to run")?;
    } else {
        writeln!(out, "{lead}:")?;
        let mut rows = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            if held == Some(i) {
                rows.push(vec![
                    "".into(),
                    "(paused here; once resumed:)".into(),
                    "".into(),
                ]);
            }
            rows.push(vec![
                (i + 1).to_string(),
                s["step"].as_str().unwrap_or("?").to_string(),
                s["action"].as_str().unwrap_or("?").to_string(),
            ]);
        }
        if held == Some(steps.len()) {
            rows.push(vec!["".into(), "(paused here)".into(), "".into()]);
        }
        render::table(out, &["#", "STEP", "ACTION"], &rows)?;
    }
    if let Some(end) = p["ends_as"].as_str() {
        writeln!(out, "ends as: {end}")?;
    }
    Ok(())
}

fn bulk(out: &mut dyn Write, verb: &str, def: &str, v: &Value, dry: bool) -> Result<(), CliError> {
    let applied = v["applied"].as_array().cloned().unwrap_or_default();
    let refused = v["refused"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "{}{verb} of definition {def}: {} sagas, {} refused",
        if dry { "dry run: " } else { "" },
        applied.len(),
        refused.len()
    )?;
    let mut rows: Vec<Vec<String>> = applied
        .iter()
        .map(|o| {
            vec![
                o["saga_id"].as_str().unwrap_or("?").to_string(),
                o["status"].as_str().unwrap_or("?").to_string(),
                String::new(),
            ]
        })
        .collect();
    rows.extend(refused.iter().map(|r| {
        vec![
            r["saga_id"].as_str().unwrap_or("?").to_string(),
            "refused".into(),
            r["reason"].as_str().unwrap_or("").to_string(),
        ]
    }));
    if !rows.is_empty() {
        render::table(out, &["ID", "STATUS", "WHY"], &rows)?;
    }
    Ok(())
}
