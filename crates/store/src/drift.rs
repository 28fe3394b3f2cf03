//! The drift log: every time an item appeared, changed, disappeared or came back.

use crate::backend::{in_write_tx, on_pool};
use crate::{DriftChange, DriftRecord, PinKind, Store, StoreError, json_text, json_value};

/// A `drift` row as decoded: id, server, kind, name, change, old_hash, new_hash, diff, findings, at_ms.
type DriftRow = (i64, String, String, String, String, Option<String>, Option<String>, String, String, i64);

impl Store {
    /// Appends a drift event; returns the id the store assigned (the record's own `id` is ignored).
    pub async fn record_drift(&self, drift: &DriftRecord) -> Result<i64, StoreError> {
        let findings = json_text(&drift.findings)?;
        in_write_tx!(self, |tx| {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO drift (server, kind, name, change, old_hash, new_hash, diff, findings, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(&drift.server)
            .bind(drift.kind.as_str())
            .bind(&drift.name)
            .bind(drift.change.as_str())
            .bind(&drift.old_hash)
            .bind(&drift.new_hash)
            .bind(&drift.diff)
            .bind(&findings)
            .bind(drift.at_ms)
            .fetch_one(&mut *tx)
            .await?;
            Ok((id, true))
        })
    }

    /// The latest `limit` drift events, of one server or of all, newest (last recorded) first.
    pub async fn drift(&self, server: Option<&str>, limit: usize) -> Result<Vec<DriftRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<DriftRow> = match server {
            Some(server) => on_pool!(self, |pool| {
                sqlx::query_as(
                    "SELECT id, server, kind, name, change, old_hash, new_hash, diff, findings, at_ms \
                     FROM drift WHERE server = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(server)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }),
            None => on_pool!(self, |pool| {
                sqlx::query_as(
                    "SELECT id, server, kind, name, change, old_hash, new_hash, diff, findings, at_ms \
                     FROM drift ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await?
            }),
        };
        rows.into_iter().map(drift_from).collect()
    }
}

fn drift_from(
    (id, server, kind, name, change, old_hash, new_hash, diff, findings, at_ms): DriftRow,
) -> Result<DriftRecord, StoreError> {
    let findings = json_value(&findings, &format!("drift event {id}"))?;
    Ok(DriftRecord {
        id,
        kind: PinKind::parse(&kind)?,
        change: DriftChange::parse(&change)?,
        server,
        name,
        old_hash,
        new_hash,
        diff,
        findings,
        at_ms,
    })
}
