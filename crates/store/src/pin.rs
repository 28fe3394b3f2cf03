//! Pins: the approved and the last observed metadata hash of every tool, prompt and resource
//! template of a server, and the transitions between approved, quarantined, new and removed.

use std::collections::HashSet;

use crate::backend::{in_write_tx, on_pool};
use crate::{Observation, PinKind, PinRecord, PinState, Store, StoreError, json_text, json_value};

/// A `pins` row as decoded, in the order of `pin_columns!`.
type PinRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    i64,
);

macro_rules! pin_columns {
    () => {
        "server, kind, name, state, approved_hash, approved_metadata, observed_hash, observed_metadata, \
         approved_by, approved_at_ms, override_reason, first_seen_ms, last_seen_ms"
    };
}

const SELECT_ONE: &str = concat!("SELECT ", pin_columns!(), " FROM pins WHERE server = $1 AND kind = $2 AND name = $3");
const SELECT_SERVER: &str = concat!("SELECT ", pin_columns!(), " FROM pins WHERE server = $1");
const SELECT_OFFERED: &str =
    concat!("SELECT ", pin_columns!(), " FROM pins WHERE server = $1 AND state IN ('approved', 'quarantined')");
/// Moves the observed metadata to the approved one (the right-hand sides read the old row).
const APPROVE_ONE: &str = concat!(
    "UPDATE pins SET state = 'approved', approved_hash = observed_hash, approved_metadata = observed_metadata, \
     observed_hash = NULL, observed_metadata = NULL, approved_by = $4, approved_at_ms = $5, override_reason = $6 \
     WHERE server = $1 AND kind = $2 AND name = $3 AND observed_hash = $7 AND state IN ('new', 'quarantined') \
     RETURNING ",
    pin_columns!()
);
const APPROVE_ALL: &str = concat!(
    "UPDATE pins SET state = 'approved', approved_hash = observed_hash, approved_metadata = observed_metadata, \
     observed_hash = NULL, observed_metadata = NULL, approved_by = $2, approved_at_ms = $3, override_reason = NULL \
     WHERE server = $1 AND state IN ('new', 'quarantined') AND observed_hash IS NOT NULL \
     RETURNING ",
    pin_columns!()
);

impl Store {
    /// Every pin of a server, sorted by kind (tools, prompts, resource templates), then name.
    pub async fn pins(&self, server: &str) -> Result<Vec<PinRecord>, StoreError> {
        let rows: Vec<PinRow> =
            on_pool!(self, |pool| sqlx::query_as(SELECT_SERVER).bind(server).fetch_all(pool).await?);
        sorted(rows)
    }

    /// Records that a server offers an item with this metadata hash, and says how that compares
    /// with its pin (atomically, so concurrent observers from several replicas agree):
    ///
    /// - no pin yet: a `New` pin holding the observation → `New`;
    /// - the approved hash: state `Approved`, observation cleared → `Unchanged`, or `Returned` if
    ///   the pin was `Removed`;
    /// - another hash than the approved one: state `Quarantined` holding the observation → `Changed`;
    /// - never approved: stays `New`, observation replaced → `New`.
    pub async fn observe(
        &self,
        server: &str,
        kind: PinKind,
        name: &str,
        hash: &str,
        metadata: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Observation, StoreError> {
        let metadata = json_text(metadata)?;
        in_write_tx!(self, |tx| {
            let current: Option<PinRow> =
                sqlx::query_as(SELECT_ONE).bind(server).bind(kind.as_str()).bind(name).fetch_optional(&mut *tx).await?;
            let Some(current) = current else {
                sqlx::query(
                    "INSERT INTO pins (server, kind, name, state, observed_hash, observed_metadata, \
                     first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, 'new', $4, $5, $6, $6)",
                )
                .bind(server)
                .bind(kind.as_str())
                .bind(name)
                .bind(hash)
                .bind(&metadata)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                return Ok((Observation::New, true));
            };
            let pin = pin_from(current)?;
            let (state, observed, observation) = match pin.approved_hash {
                Some(approved) if approved == hash => {
                    let seen =
                        if pin.state == PinState::Removed { Observation::Returned } else { Observation::Unchanged };
                    (PinState::Approved, None, seen)
                }
                Some(approved) => (PinState::Quarantined, Some(hash), Observation::Changed { approved_hash: approved }),
                None => (PinState::New, Some(hash), Observation::New),
            };
            sqlx::query(
                "UPDATE pins SET state = $4, observed_hash = $5, observed_metadata = $6, last_seen_ms = $7 \
                 WHERE server = $1 AND kind = $2 AND name = $3",
            )
            .bind(server)
            .bind(kind.as_str())
            .bind(name)
            .bind(state.as_str())
            .bind(observed)
            .bind(observed.map(|_| metadata.as_str()))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            Ok((observation, true))
        })
    }

    /// After a complete listing taken at `now_ms`, marks every approved or quarantined pin of the
    /// server that the listing lacks as `Removed`, and returns those (sorted as [`Store::pins`]).
    ///
    /// A pin observed after `now_ms` (by another replica's newer listing) is left alone.
    pub async fn mark_removed(
        &self,
        server: &str,
        present: &[(PinKind, String)],
        now_ms: i64,
    ) -> Result<Vec<PinRecord>, StoreError> {
        let present: HashSet<(PinKind, &str)> = present.iter().map(|(kind, name)| (*kind, name.as_str())).collect();
        in_write_tx!(self, |tx| {
            let offered: Vec<PinRow> = sqlx::query_as(SELECT_OFFERED).bind(server).fetch_all(&mut *tx).await?;
            let mut removed = Vec::new();
            for row in offered {
                let mut pin = pin_from(row)?;
                if present.contains(&(pin.kind, pin.name.as_str())) || pin.last_seen_ms > now_ms {
                    continue;
                }
                sqlx::query("UPDATE pins SET state = 'removed' WHERE server = $1 AND kind = $2 AND name = $3")
                    .bind(server)
                    .bind(pin.kind.as_str())
                    .bind(&pin.name)
                    .execute(&mut *tx)
                    .await?;
                pin.state = PinState::Removed;
                removed.push(pin);
            }
            removed.sort_by(pin_order);
            let changed = !removed.is_empty();
            Ok((removed, changed))
        })
    }

    /// Approves what was observed of one item: the observed metadata becomes the approved one.
    ///
    /// `Conflict` if the observed hash is no longer `expected_observed_hash` (a newer change arrived
    /// since the caller looked), `NotFound` if there is no such pin, `Invalid` if nothing observed
    /// awaits approval (already approved, or removed).
    #[allow(clippy::too_many_arguments)]
    pub async fn approve_pin(
        &self,
        server: &str,
        kind: PinKind,
        name: &str,
        expected_observed_hash: &str,
        actor: &str,
        override_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<PinRecord, StoreError> {
        in_write_tx!(self, |tx| {
            let approved: Option<PinRow> = sqlx::query_as(APPROVE_ONE)
                .bind(server)
                .bind(kind.as_str())
                .bind(name)
                .bind(actor)
                .bind(now_ms)
                .bind(override_reason)
                .bind(expected_observed_hash)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = approved {
                return Ok((pin_from(row)?, true));
            }
            let current: Option<PinRow> =
                sqlx::query_as(SELECT_ONE).bind(server).bind(kind.as_str()).bind(name).fetch_optional(&mut *tx).await?;
            let what = pin_what(server, kind, name);
            let Some(current) = current else { return Err(StoreError::NotFound { what }) };
            let pin = pin_from(current)?;
            Err(match (pin.state, pin.observed_hash) {
                (PinState::Removed, _) => {
                    StoreError::Invalid(format!("{what} is no longer offered; nothing to approve"))
                }
                (_, None) => StoreError::Invalid(format!("{what} has no observed change awaiting approval")),
                (_, Some(_)) => StoreError::Conflict { what },
            })
        })
    }

    /// Approves every new or quarantined pin of a server (no override); returns them (sorted as
    /// [`Store::pins`]).
    pub async fn approve_all(&self, server: &str, actor: &str, now_ms: i64) -> Result<Vec<PinRecord>, StoreError> {
        in_write_tx!(self, |tx| {
            let rows: Vec<PinRow> =
                sqlx::query_as(APPROVE_ALL).bind(server).bind(actor).bind(now_ms).fetch_all(&mut *tx).await?;
            let approved = sorted(rows)?;
            let changed = !approved.is_empty();
            Ok((approved, changed))
        })
    }

    /// Forgets every pin of a server; returns how many there were.
    pub async fn delete_pins(&self, server: &str) -> Result<u64, StoreError> {
        in_write_tx!(self, |tx| {
            let deleted = sqlx::query("DELETE FROM pins WHERE server = $1").bind(server).execute(&mut *tx).await?;
            let count = deleted.rows_affected();
            Ok((count, count > 0))
        })
    }
}

fn pin_what(server: &str, kind: PinKind, name: &str) -> String {
    format!("{kind} {name} of {server}")
}

fn pin_from(row: PinRow) -> Result<PinRecord, StoreError> {
    let (
        server,
        kind,
        name,
        state,
        approved_hash,
        approved_metadata,
        observed_hash,
        observed_metadata,
        approved_by,
        approved_at_ms,
        override_reason,
        first_seen_ms,
        last_seen_ms,
    ) = row;
    let kind = PinKind::parse(&kind)?;
    let what = pin_what(&server, kind, &name);
    Ok(PinRecord {
        state: PinState::parse(&state)?,
        approved_metadata: approved_metadata.map(|m| json_value(&m, &what)).transpose()?,
        observed_metadata: observed_metadata.map(|m| json_value(&m, &what)).transpose()?,
        server,
        kind,
        name,
        approved_hash,
        observed_hash,
        approved_by,
        approved_at_ms,
        override_reason,
        first_seen_ms,
        last_seen_ms,
    })
}

/// By kind, then name in byte order (the same on both engines, whatever the database collation).
fn pin_order(a: &PinRecord, b: &PinRecord) -> std::cmp::Ordering {
    a.kind.cmp(&b.kind).then_with(|| a.name.cmp(&b.name))
}

fn sorted(rows: Vec<PinRow>) -> Result<Vec<PinRecord>, StoreError> {
    let mut pins = rows.into_iter().map(pin_from).collect::<Result<Vec<_>, _>>()?;
    pins.sort_by(pin_order);
    Ok(pins)
}
