//! The audit trail's tables: records appended to hash-chained streams, their signed
//! checkpoints, searches over them, and retention. Audit writes do not move the registry
//! revision.

use std::collections::HashMap;

use portcullis_audit::chain::GENESIS;
use portcullis_audit::{Checkpoint, Entry, Record};

use crate::backend::on_pool;
use crate::{Store, StoreError};

/// At most this many records are inserted by one statement (SQLite binds at most 32766 values).
const ROWS_PER_INSERT: usize = 500;

const COLUMNS: &str = "stream, seq, time_ms, kind, correlation, request, parent, principal, server, item, outcome, \
                       body, digest, prev_hash, hash";
const CHECKPOINT_COLUMNS: &str = "stream, seq, hash, floor, time_ms, key_id, signature";

/// An `audit_records` row as decoded.
type RecordRow =
    (String, i64, i64, String, String, String, String, String, String, String, String, String, String, String, String);
type CheckpointRow = (String, i64, String, i64, i64, String, String);

/// What an audit search matches; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub principal: Option<String>,
    pub server: Option<String>,
    pub item: Option<String>,
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub correlation: Option<String>,
    /// Records at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Records before this time.
    pub until_ms: Option<i64>,
    /// At most this many records.
    pub limit: u32,
    /// The newest first (else the oldest first).
    pub newest_first: bool,
}

/// Appends `VALUES (…), (…)` for `$rows` (records) to a query builder, in [`COLUMNS`] order;
/// a macro because the builder's engine differs between the callers.
macro_rules! push_records {
    ($q:expr, $rows:expr) => {
        $q.push_values($rows, |mut b, r| {
            let e = &r.entry;
            b.push_bind(&r.stream)
                .push_bind(r.seq)
                .push_bind(e.time_ms)
                .push_bind(&e.kind)
                .push_bind(&e.correlation)
                .push_bind(&e.request)
                .push_bind(&e.parent)
                .push_bind(&e.principal)
                .push_bind(&e.server)
                .push_bind(&e.item)
                .push_bind(&e.outcome)
                .push_bind(&e.body)
                .push_bind(&r.digest)
                .push_bind(&r.prev_hash)
                .push_bind(&r.hash);
        })
    };
}

/// SQLite's optimistic append in one round trip: when every stream of a batch is chained after
/// the caller's own last record, the whole transaction is one statement list (`BEGIN IMMEDIATE`,
/// per stream a head check, the head's update and the rows, `COMMIT`) sent to SQLite's thread
/// once, instead of a round trip per statement. The head check inserts a row with a NULL `seq`
/// when the stream's head is missing or not the caller's, which fails on the column's NOT NULL:
/// the list stops there, is rolled back, and the caller hears [`StoreError::Conflict`].
struct Plan {
    streams: Vec<(String, (i64, String), std::ops::Range<usize>)>,
    records: Vec<Record>,
}

/// SQLite binds at most 32766 values per statement; a plan stays well below in total.
const PLAN_MAX_BINDS: usize = 30_000;

impl Plan {
    fn new(batch: &[(String, Vec<Entry>)], after: &HashMap<String, (i64, String)>) -> Option<Self> {
        let batch: Vec<_> = batch.iter().filter(|(_, e)| !e.is_empty()).collect();
        let rows: usize = batch.iter().map(|(_, e)| e.len()).sum();
        if batch.is_empty() || rows * 15 + batch.len() * 6 > PLAN_MAX_BINDS {
            return None;
        }
        let mut streams = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(rows);
        for (stream, entries) in batch {
            let from = after.get(stream)?.clone();
            let (mut seq, mut hash) = from.clone();
            let first = records.len();
            for entry in entries {
                let record = Record::chain(stream, seq, &hash, entry.clone());
                seq = record.seq;
                hash.clone_from(&record.hash);
                records.push(record);
            }
            streams.push((stream.clone(), from, first..records.len()));
        }
        Some(Self { streams, records })
    }

    /// Runs on a task of its own, so a caller that stops waiting cannot cut the list short and
    /// leave its transaction open on the connection: it commits or rolls back either way.
    async fn run(self, pool: &sqlx::SqlitePool) -> Result<Vec<Record>, StoreError> {
        let pool = pool.clone();
        tokio::spawn(async move { self.execute(&pool).await })
            .await
            .map_err(|e| StoreError::Invalid(format!("audit append task: {e}")))?
    }

    async fn execute(self, pool: &sqlx::SqlitePool) -> Result<Vec<Record>, StoreError> {
        let mut conn = pool.acquire().await?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("BEGIN IMMEDIATE;");
        for (stream, (from_seq, from_hash), range) in &self.streams {
            let rows = &self.records[range.clone()];
            let Some(last) = rows.last() else { continue };
            q.push(" INSERT INTO audit_heads (stream, seq, hash) SELECT ")
                .push_bind(stream.as_str())
                .push(", NULL, '' WHERE NOT EXISTS (SELECT 1 FROM audit_heads WHERE stream = ")
                .push_bind(stream.as_str())
                .push(" AND seq = ")
                .push_bind(*from_seq)
                .push(" AND hash = ")
                .push_bind(from_hash.as_str())
                .push("); UPDATE audit_heads SET seq = ")
                .push_bind(last.seq)
                .push(", hash = ")
                .push_bind(last.hash.as_str())
                .push(" WHERE stream = ")
                .push_bind(stream.as_str())
                .push(format!("; INSERT INTO audit_records ({COLUMNS}) "));
            push_records!(q, rows);
            q.push(";");
        }
        q.push(" COMMIT;");
        match q.build().execute(&mut *conn).await {
            Ok(_) => Ok(self.records),
            Err(e) => {
                // The list stopped at the failed statement, inside its transaction (or before it
                // began: then there is nothing to roll back). A connection that cannot be brought
                // back to autocommit is closed, not returned to the pool inside a transaction.
                if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await
                    && !rollback.to_string().contains("no transaction is active")
                {
                    let _ = conn.close().await;
                }
                let head_moved = matches!(&e, sqlx::Error::Database(d) if d.message().contains("audit_heads.seq"));
                match (head_moved, self.streams.first()) {
                    (true, Some((stream, ..))) => Err(StoreError::Conflict { what: format!("audit stream {stream}") }),
                    _ => Err(e.into()),
                }
            }
        }
    }
}

/// Runs `$body` in one transaction bound to `$tx`, committed when it succeeds.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        match &$store.backend {
            crate::backend::Backend::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let value = $body;
                $tx.commit().await?;
                value
            }
            crate::backend::Backend::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let value = $body;
                $tx.commit().await?;
                value
            }
        }
    };
}

impl Store {
    /// Appends entries to their streams in one transaction, each after its stream's current
    /// head, and returns the records as chained. Writers on one stream take turns (the head row
    /// is locked), so two gateways sharing a stream still build one chain.
    pub async fn append_audit(&self, batch: &[(String, Vec<Entry>)]) -> Result<Vec<Record>, StoreError> {
        self.append_audit_after(batch, &HashMap::new()).await
    }

    /// As [`Store::append_audit`], but a stream named in `after` is chained after that record
    /// (the caller's own last one) without reading its head first: one statement fewer. If the
    /// head has moved since (someone else appended), nothing is written and the answer is
    /// [`StoreError::Conflict`].
    pub async fn append_audit_after(
        &self,
        batch: &[(String, Vec<Entry>)],
        after: &HashMap<String, (i64, String)>,
    ) -> Result<Vec<Record>, StoreError> {
        if let crate::backend::Backend::Sqlite(pool) = &self.backend
            && let Some(plan) = Plan::new(batch, after)
        {
            return plan.run(pool).await;
        }
        let mut out = Vec::with_capacity(batch.iter().map(|(_, e)| e.len()).sum());
        in_tx!(self, |tx| {
            for (stream, entries) in batch.iter().filter(|(_, e)| !e.is_empty()) {
                let first = out.len();
                let (mut seq, mut hash) = match after.get(stream) {
                    Some(known) => known.clone(),
                    None => {
                        let lock = if self.backend_name() == "postgres" { " FOR UPDATE" } else { "" };
                        let select = format!("SELECT seq, hash FROM audit_heads WHERE stream = $1{lock}");
                        let head: Option<(i64, String)> =
                            sqlx::query_as(&select).bind(stream).fetch_optional(&mut *tx).await?;
                        match head {
                            Some(head) => head,
                            None => {
                                // A new stream (two replicas may race to create it: one insert wins).
                                sqlx::query(
                                    "INSERT INTO audit_heads (stream, seq, hash) VALUES ($1, 0, $2) \
                                     ON CONFLICT (stream) DO NOTHING",
                                )
                                .bind(stream)
                                .bind(GENESIS)
                                .execute(&mut *tx)
                                .await?;
                                sqlx::query_as(&select).bind(stream).fetch_one(&mut *tx).await?
                            }
                        }
                    }
                };
                let (from_seq, from_hash) = (seq, hash.clone());
                for entry in entries {
                    let record = Record::chain(stream, seq, &hash, entry.clone());
                    seq = record.seq;
                    hash.clone_from(&record.hash);
                    out.push(record);
                }
                // The head moves only from where the chain was computed: the row lock this takes
                // makes concurrent writers on the stream take turns, and a writer whose idea of the
                // head is stale changes nothing.
                let moved = sqlx::query(
                    "UPDATE audit_heads SET seq = $2, hash = $3 WHERE stream = $1 AND seq = $4 AND hash = $5",
                )
                .bind(stream)
                .bind(seq)
                .bind(&hash)
                .bind(from_seq)
                .bind(&from_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved != 1 {
                    return Err(StoreError::Conflict { what: format!("audit stream {stream}") });
                }
                for rows in out[first..].chunks(ROWS_PER_INSERT) {
                    let mut q = sqlx::QueryBuilder::new(format!("INSERT INTO audit_records ({COLUMNS}) "));
                    push_records!(q, rows);
                    q.build().execute(&mut *tx).await?;
                }
            }
        });
        Ok(out)
    }

    /// Whether a stream already holds this entry (replaying a spool must not record it twice).
    pub async fn audit_has(&self, stream: &str, e: &Entry) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT seq FROM audit_records WHERE correlation = $1 AND request = $2 AND time_ms = $3 \
                 AND kind = $4 AND stream = $5 LIMIT 1",
            )
            .bind(&e.correlation)
            .bind(&e.request)
            .bind(e.time_ms)
            .bind(&e.kind)
            .bind(stream)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.is_some())
    }

    /// Every stream with records, a head or checkpoints, by name.
    pub async fn audit_streams(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT stream FROM audit_heads UNION SELECT stream FROM audit_records \
                 UNION SELECT stream FROM audit_checkpoints ORDER BY stream",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// A stream's last sequence number and hash (0 and the genesis hash when it has none).
    pub async fn audit_head(&self, stream: &str) -> Result<(i64, String), StoreError> {
        let row: Option<(i64, String)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE stream = $1")
                .bind(stream)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.unwrap_or_else(|| (0, GENESIS.to_owned())))
    }

    /// Up to `limit` records of a stream from sequence number `from` on, in order.
    pub async fn audit_records(&self, stream: &str, from: i64, limit: u32) -> Result<Vec<Record>, StoreError> {
        let rows: Vec<RecordRow> = on_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM audit_records WHERE stream = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
            ))
            .bind(stream)
            .bind(from)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(record_from).collect())
    }

    /// Records matching a query, in time order.
    pub async fn search_audit(&self, q: &AuditQuery) -> Result<Vec<Record>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_records WHERE 1 = 1");
        let mut texts: Vec<&str> = Vec::new();
        let filters = [
            ("principal", &q.principal),
            ("server", &q.server),
            ("item", &q.item),
            ("kind", &q.kind),
            ("outcome", &q.outcome),
            ("correlation", &q.correlation),
        ];
        for (column, value) in filters {
            if let Some(v) = value {
                texts.push(v);
                sql.push_str(&format!(" AND {column} = ${}", texts.len()));
            }
        }
        let n = texts.len();
        sql.push_str(&format!(
            " AND time_ms >= ${} AND time_ms < ${} ORDER BY time_ms {order}, stream {order}, seq {order} LIMIT ${}",
            n + 1,
            n + 2,
            n + 3,
            order = if q.newest_first { "DESC" } else { "ASC" },
        ));
        let rows: Vec<RecordRow> = on_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql);
            for t in &texts {
                query = query.bind(*t);
            }
            query
                .bind(q.since_ms.unwrap_or(i64::MIN))
                .bind(q.until_ms.unwrap_or(i64::MAX))
                .bind(i64::from(q.limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(record_from).collect())
    }

    /// Stores a checkpoint (replacing one at the same sequence number, as a newer floor does).
    pub async fn add_audit_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(&format!(
                "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (stream, seq) DO UPDATE SET hash = excluded.hash, floor = excluded.floor, \
                 time_ms = excluded.time_ms, key_id = excluded.key_id, signature = excluded.signature"
            ))
            .bind(&c.stream)
            .bind(c.seq)
            .bind(&c.hash)
            .bind(c.floor)
            .bind(c.time_ms)
            .bind(&c.key_id)
            .bind(&c.signature)
            .execute(pool)
            .await
            .map(|_| ())?
        });
        Ok(())
    }

    /// A stream's checkpoints, by sequence number.
    pub async fn audit_checkpoints(&self, stream: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<CheckpointRow> = on_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE stream = $1 ORDER BY seq"
            ))
            .bind(stream)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(stream, seq, hash, floor, time_ms, key_id, signature)| Checkpoint {
                stream,
                seq,
                hash,
                floor,
                time_ms,
                key_id,
                signature,
            })
            .collect())
    }

    /// The sequence number of a stream's first record at or after `time_ms` (`None` when every
    /// record is older).
    pub async fn audit_first_since(&self, stream: &str, time_ms: i64) -> Result<Option<i64>, StoreError> {
        let (seq,): (Option<i64>,) = on_pool!(self, |pool| {
            sqlx::query_as("SELECT MIN(seq) FROM audit_records WHERE stream = $1 AND time_ms >= $2")
                .bind(stream)
                .bind(time_ms)
                .fetch_one(pool)
                .await?
        });
        Ok(seq)
    }

    /// Deletes a stream's records and checkpoints below `floor`; returns how many records went. Callers sign a checkpoint with the new floor first.
    pub async fn prune_audit(&self, stream: &str, floor: i64) -> Result<u64, StoreError> {
        let deleted = in_tx!(self, |tx| {
            let deleted = sqlx::query("DELETE FROM audit_records WHERE stream = $1 AND seq < $2")
                .bind(stream)
                .bind(floor)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Checkpoints of pruned records anchor nothing any more; the one carrying the floor
            // covers the head, above it.
            sqlx::query("DELETE FROM audit_checkpoints WHERE stream = $1 AND seq < $2")
                .bind(stream)
                .bind(floor)
                .execute(&mut *tx)
                .await?;
            deleted
        });
        Ok(deleted)
    }
}

fn record_from(r: RecordRow) -> Record {
    let (
        stream,
        seq,
        time_ms,
        kind,
        correlation,
        request,
        parent,
        principal,
        server,
        item,
        outcome,
        body,
        digest,
        prev_hash,
        hash,
    ) = r;
    Record {
        stream,
        seq,
        entry: Entry { time_ms, kind, correlation, request, parent, principal, server, item, outcome, body },
        digest,
        prev_hash,
        hash,
    }
}

impl Store {
    /// Verifies one stream: its records page by page against its checkpoints (with `keys`,
    /// only checkpoints one of them signed are trusted) and its head row.
    pub async fn verify_audit(
        &self,
        stream: &str,
        keys: &[portcullis_audit::VerifyingKey],
    ) -> Result<portcullis_audit::Report, StoreError> {
        const PAGE: u32 = 2_000;
        // The head first: records appended while this runs only come after it.
        let (head, _) = self.audit_head(stream).await?;
        let checkpoints = self.audit_checkpoints(stream).await?;
        // A stream whose records are all under a minute old may be awaiting its first checkpoint.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut verifier = portcullis_audit::Verifier::new(stream, &checkpoints, keys).recent_since(now - 60_000);
        let mut from = i64::MIN;
        loop {
            let page = self.audit_records(stream, from, PAGE).await?;
            for r in &page {
                verifier.feed(r);
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => from = last.seq + 1,
                _ => break,
            }
        }
        let mut report = verifier.finish();
        let last = report.last_seq.unwrap_or(0);
        if head > last && !report.findings.iter().any(|f| matches!(f, portcullis_audit::Finding::Truncated { .. })) {
            report.findings.push(portcullis_audit::Finding::Truncated { from: last + 1, to: head });
        }
        Ok(report)
    }
}
