//! Readable output of the `sagas` commands: aligned tables and key/value
//! blocks built from the admin API's JSON (the same JSON `--json` prints).

use chrono::{TimeZone, Utc};
use serde_json::Value;
use std::io::Write;

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |out: &mut dyn Write, cells: Vec<&str>| -> std::io::Result<()> {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i + 1 < n {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, header.to_vec())?;
    for r in rows {
        line(out, r.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// `2024-05-01 12:00:03Z` for ms since the epoch.
pub fn time(ms: u64) -> String {
    match Utc.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => ms.to_string(),
    }
}

/// `3d`, `5h`, `12m`, `40s`: how long ago `ms` was.
pub fn age(ms: u64, now_ms: u64) -> String {
    span(now_ms.saturating_sub(ms) / 1000)
}

/// `3d`, `5h`, `12m`, `40s` for a number of seconds.
pub fn span(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The page of `GET /api/admin/sagas` as a table.
pub fn saga_list(out: &mut dyn Write, page: &Value, now_ms: u64) -> std::io::Result<()> {
    let empty = Vec::new();
    let sagas = page["sagas"].as_array().unwrap_or(&empty);
    if sagas.is_empty() {
        writeln!(out, "no sagas match")?;
    } else {
        let rows: Vec<Vec<String>> = sagas
            .iter()
            .map(|s| {
                let created = s["created_at_ms"].as_u64().unwrap_or(0);
                let note = match (&s["booking_ref"], &s["failure"]) {
                    (Value::String(r), _) => r.clone(),
                    (_, Value::String(f)) => shorten(f, 60),
                    _ => String::new(),
                };
                vec![
                    text(&s["id"]),
                    format!("{} v{}", text(&s["definition"]), text(&s["version"])),
                    text(&s["status"]),
                    time(created),
                    age(created, now_ms),
                    note,
                ]
            })
            .collect();
        table(
            out,
            &[
                "ID",
                "DEFINITION",
                "STATUS",
                "CREATED",
                "AGE",
                "REF / FAILURE",
            ],
            &rows,
        )?;
    }
    if let Some(c) = page["next_cursor"].as_str() {
        let why = if page["partial"] == Value::Bool(true) {
            " (the page stopped early after reading many sagas)"
        } else {
            ""
        };
        writeln!(out, "more{why}: --cursor {c}")?;
    }
    Ok(())
}

/// One saga (`GET /api/admin/sagas/{id}`) as a block and a step table.
pub fn saga(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let s = &v["saga"];
    let at = |k: &str| s[k].as_u64().map(time).unwrap_or_else(|| "-".into());
    for (k, val) in [
        ("id", text(&s["id"])),
        (
            "definition",
            format!("{} v{}", text(&s["definition"]), text(&s["version"])),
        ),
        ("status", text(&s["status"])),
        ("created", at("created_at_ms")),
        ("updated", at("updated_at_ms")),
        ("booking ref", text(&s["booking_ref"])),
        ("failure", text(&s["failure"])),
        ("idempotency key", text(&v["idempotency_key"])),
        ("revision", text(&v["revision"])),
    ] {
        writeln!(out, "{k:<16} {val}")?;
    }
    writeln!(out)?;
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = s["steps"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|st| {
            vec![
                text(&st["name"]),
                text(&st["state"]),
                text(&st["attempts"]),
                text(&st["compensation_attempts"]),
                shorten(&text(&st["last_error"]), 60),
            ]
        })
        .collect();
    table(
        out,
        &["STEP", "STATE", "ATTEMPTS", "COMPENSATIONS", "LAST ERROR"],
        &rows,
    )
}

/// A saga's history (`GET /api/admin/sagas/{id}/history`) as a table.
pub fn history(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = v["events"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|e| {
            let mut detail = e.as_object().cloned().unwrap_or_default();
            for k in ["saga_id", "seq", "at_ms", "event"] {
                detail.remove(k);
            }
            let detail = detail
                .iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                text(&e["seq"]),
                e["at_ms"].as_u64().map(time).unwrap_or_default(),
                text(&e["event"]),
                shorten(&detail, 100),
            ]
        })
        .collect();
    table(out, &["SEQ", "AT", "EVENT", "DETAIL"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_to_the_widest_cell() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["A", "BB"],
            &[vec!["long cell".into(), "x".into()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A          BB\nlong cell  x\n"
        );
        assert_eq!(age(0, 90_000), "90s");
        assert_eq!(age(0, 3 * 86_400_000), "3d");
    }
}
