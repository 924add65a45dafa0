//! Paged listing and status counts on PostgreSQL.
//!
//! A page is one `SELECT` of live rows (`purged_ms IS NULL`) in
//! `(created_ms, id)` order, newest first, from index `sagas_created` or
//! `sagas_status_created`, with the search attribute as a semi-join on
//! `saga_attributes` (index `saga_attributes_lookup`), the cursor as a row
//! comparison and `LIMIT page + 1`. The counts are the sums of the shards
//! of `saga_status_counts`, kept by the count trigger (see `schema`).

use super::{big, limit, pg, records_of, unbig, Conn, COLUMNS};
use crate::store::{PageCursor, SagaFilter, SagaPage, StatusCounts, StoreError};
use tokio_postgres::types::ToSql;

/// One page of [`crate::Store::list_page`].
pub(super) async fn list_page(
    c: &Conn,
    filter: &SagaFilter,
    cursor: Option<&PageCursor>,
    limit_n: usize,
) -> Result<SagaPage, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM sagas s WHERE s.purged_ms IS NULL");
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync + Send>| {
        params.push(v);
        sql.push_str(&clause.replace('?', &format!("${}", params.len())));
    };
    if !filter.statuses.is_empty() {
        let names: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        arg(&mut sql, " AND s.status = ANY(?::text[])", Box::new(names));
    }
    if filter.overdue {
        // From the partial index `sagas_overdue`: overdue rows only.
        sql.push_str(" AND s.overdue");
    }
    if let Some(d) = &filter.definition {
        arg(&mut sql, " AND s.definition = ?", Box::new(d.clone()));
    }
    if let Some(a) = filter.created_after_ms {
        arg(&mut sql, " AND s.created_ms >= ?::bigint", Box::new(big(a)));
    }
    if let Some(b) = filter.created_before_ms {
        arg(&mut sql, " AND s.created_ms < ?::bigint", Box::new(big(b)));
    }
    if let Some(cur) = cursor {
        arg(
            &mut sql,
            " AND (s.created_ms, s.id) < (?::bigint",
            Box::new(big(cur.created_ms)),
        );
        arg(
            &mut sql,
            ", ?::text)",
            Box::new(cur.id.as_str().to_string()),
        );
    }
    if let Some((n, v)) = &filter.attribute {
        arg(
            &mut sql,
            " AND s.id IN (SELECT a.saga_id FROM saga_attributes a WHERE a.name = ?",
            Box::new(n.clone()),
        );
        arg(&mut sql, " AND a.value = ?)", Box::new(v.clone()));
    }
    arg(
        &mut sql,
        " ORDER BY s.created_ms DESC, s.id DESC LIMIT ?::bigint",
        Box::new(limit(limit_n.saturating_add(1))),
    );
    let refs: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    let rows = c.client.query(&sql, &refs).await.map_err(pg)?;
    Ok(SagaPage::from_matches(records_of(&rows)?, limit_n))
}

/// [`crate::Store::status_counts`]: the shards' sums.
pub(super) async fn status_counts(c: &Conn) -> Result<StatusCounts, StoreError> {
    let rows = c
        .client
        .query(
            "SELECT status, sum(n)::bigint FROM saga_status_counts
             GROUP BY status HAVING sum(n) <> 0",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), unbig(r.get::<_, i64>(1))))
        .collect())
}
