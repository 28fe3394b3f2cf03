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

/// A batch for a dedicated SQLite store's [`Appender`]: each stream's entries, and the heads the
/// caller believes its streams have (its own last records).
struct Plan {
    batch: Vec<(String, Vec<Entry>)>,
    after: HashMap<String, (i64, String)>,
}

impl Plan {
    /// One transaction: per stream, its entries are chained after the caller's head for it (or,
    /// when the caller names none, after the stream's head as stored), the head moves from where
    /// the chain was computed (or nothing is written: [`StoreError::Conflict`]), then the rows go
    /// in. Dropping the transaction on an error rolls it back.
    fn execute(self, conn: &mut rusqlite::Connection) -> Result<Vec<Record>, StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(self.batch.iter().map(|(_, e)| e.len()).sum());
        for (stream, entries) in self.batch {
            if entries.is_empty() {
                continue;
            }
            let (from_seq, from_hash) = match self.after.get(&stream) {
                Some(known) => known.clone(),
                None => {
                    tx.prepare_cached("INSERT INTO audit_heads (stream, seq, hash) VALUES (?1, 0, ?2) ON CONFLICT (stream) DO NOTHING")
                        .and_then(|mut insert| insert.execute(rusqlite::params![stream, GENESIS]))
                        ?;
                    tx.prepare_cached("SELECT seq, hash FROM audit_heads WHERE stream = ?1")
                        .and_then(|mut select| select.query_row([&stream], |row| Ok((row.get(0)?, row.get(1)?))))?
                }
            };
            let first = out.len();
            out.extend(Record::chain_all(&stream, from_seq, &from_hash, entries));
            let Some(last) = out[first..].last() else { continue };
            let moved = tx
                .prepare_cached(
                    "UPDATE audit_heads SET seq = ?2, hash = ?3 WHERE stream = ?1 AND seq = ?4 AND hash = ?5",
                )
                .and_then(|mut update| {
                    update.execute(rusqlite::params![stream, last.seq, last.hash, from_seq, from_hash])
                })?;
            if moved != 1 {
                return Err(StoreError::Conflict { what: format!("audit stream {stream}") });
            }
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO audit_records ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                ))
                ?;
            for r in &out[first..] {
                let e = &r.entry;
                insert.execute(rusqlite::params![
                    r.stream,
                    r.seq,
                    e.time_ms,
                    e.kind,
                    e.correlation,
                    e.request,
                    e.parent,
                    e.principal,
                    e.server,
                    e.item,
                    e.outcome,
                    e.body,
                    r.digest,
                    r.prev_hash,
                    r.hash
                ])?;
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

/// Where the outcome of an [`Appender`] job goes.
type Done = tokio::sync::oneshot::Sender<Result<Vec<Record>, StoreError>>;

/// A job for the [`Appender`]'s thread.
enum Job {
    /// A batch to commit.
    Append(Plan, Done),
    /// Answered once everything sent before has been.
    Barrier(Done),
}

/// Opens the append connection (again, after one was given up).
type Opener = Box<dyn Fn() -> Result<rusqlite::Connection, StoreError> + Send>;

/// A dedicated SQLite store's appends, on a thread of their own that holds a synchronous
/// connection: a batch is one call into SQLite, not a round trip to sqlx's connection thread per
/// statement (each two thread switches), and its rows go through one prepared single-row insert.
/// Appends are taken in the order sent, whether chained after the caller's heads or the stored ones.
/// A caller that stops waiting does not cut a batch short: the thread commits or rolls it back
/// either way. The thread ends when the store is closed (which waits for it) or dropped.
#[derive(Debug)]
pub(crate) struct Appender {
    /// Where jobs go and the thread taking them; `None` once closed.
    worker: std::sync::Mutex<Option<(std::sync::mpsc::Sender<Job>, std::thread::JoinHandle<()>)>>,
}

impl Appender {
    /// For a dedicated store on the SQLite file at `path` (created and migrated already).
    pub(crate) fn start(path: std::path::PathBuf, synced: bool) -> Result<Self, StoreError> {
        let open: Opener = Box::new(move || {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = rusqlite::Connection::open_with_flags(&path, flags)?;
            conn.busy_timeout(crate::backend::SQLITE_BUSY_TIMEOUT)?;
            // The journal mode (WAL) is the file's; the rest is the connection's own, the same as
            // on the store's dedicated sqlx connection.
            for (name, value) in crate::backend::writer_pragmas(synced) {
                conn.pragma_update(None, name, value)?;
            }
            Ok(conn)
        });
        let first = open()?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("audit-sqlite".to_owned())
            .spawn(move || {
                let mut conn = Some(first);
                while let Ok(job) = queue.recv() {
                    match job {
                        Job::Append(plan, done) => {
                            let _ = done.send(commit(&mut conn, &open, plan));
                        }
                        Job::Barrier(done) => {
                            let _ = done.send(Ok(vec![]));
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the audit append thread: {e}")))?;
        Ok(Self { worker: std::sync::Mutex::new(Some((jobs, thread))) })
    }

    async fn append(&self, plan: Plan) -> Result<Vec<Record>, StoreError> {
        self.send(|done| Job::Append(plan, done)).await
    }

    /// Returns once every append sent before has committed or rolled back, so what a caller reads
    /// next includes a commit it stopped waiting for.
    async fn barrier(&self) -> Result<(), StoreError> {
        self.send(Job::Barrier).await.map(|_| ())
    }

    async fn send(&self, job: impl FnOnce(Done) -> Job) -> Result<Vec<Record>, StoreError> {
        let stopped = || StoreError::Backend("the audit append thread has stopped".to_owned());
        let (done, outcome) = tokio::sync::oneshot::channel();
        // Sent under the lock, so no sender outlives this call and `close` finds the thread ending.
        self.worker
            .lock()
            .map_err(|_| stopped())?
            .as_ref()
            .ok_or_else(stopped)?
            .0
            .send(job(done))
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Ends the thread once it has answered what it was sent, and waits for that.
    pub(crate) async fn close(&self) {
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some((jobs, thread)) = worker {
            drop(jobs);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Commits a plan on the append connection (opened first if there is none). A panic must not end
/// the thread (every later append would fail): it fails this batch, and the connection it left is
/// not used again; nor is one left inside a transaction (its rollback failed): the next batch opens
/// a fresh one.
fn commit(conn: &mut Option<rusqlite::Connection>, open: &Opener, plan: Plan) -> Result<Vec<Record>, StoreError> {
    let mut c = match conn.take() {
        Some(c) => c,
        None => open()?,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plan.execute(&mut c))) {
        Ok(outcome) => {
            if c.is_autocommit() || c.execute_batch("ROLLBACK").is_ok() {
                *conn = Some(c);
            }
            outcome
        }
        Err(_) => {
            tracing::error!("an audit append panicked; its batch failed");
            Err(StoreError::Backend("the audit append failed unexpectedly".to_owned()))
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
        if let Some(appender) = self.file.as_ref().map(|f| &f.appender) {
            // All of a dedicated store's appends take one queue, so they land in the order made.
            // The heads of this batch's streams only (the caller may know many more).
            let after = batch.iter().filter_map(|(s, _)| Some((s.clone(), after.get(s)?.clone()))).collect();
            return appender.append(Plan { batch: batch.to_vec(), after }).await;
        }
        let mut out = Vec::with_capacity(batch.iter().map(|(_, e)| e.len()).sum());
        in_tx!(self, |tx| {
            for (stream, entries) in batch.iter().filter(|(_, e)| !e.is_empty()) {
                let first = out.len();
                let (from_seq, from_hash) = match after.get(stream) {
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
                out.extend(Record::chain_all(stream, from_seq, &from_hash, entries.iter().cloned()));
                let Some(last) = out[first..].last() else { continue };
                // The head moves only from where the chain was computed: the row lock this takes
                // makes concurrent writers on the stream take turns, and a writer whose idea of the
                // head is stale changes nothing.
                let moved = sqlx::query(
                    "UPDATE audit_heads SET seq = $2, hash = $3 WHERE stream = $1 AND seq = $4 AND hash = $5",
                )
                .bind(stream)
                .bind(last.seq)
                .bind(&last.hash)
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
                    q.push_values(rows, |mut b, r| {
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
                    });
                    q.build().execute(&mut *tx).await?;
                }
            }
        });
        Ok(out)
    }

    /// Whether a stream already holds this entry (replaying a spool must not record it twice).
    /// On a dedicated store, appends sent before (a commit its caller stopped waiting for) land
    /// first: a record that was late is found, not written again.
    pub async fn audit_has(&self, stream: &str, e: &Entry) -> Result<bool, StoreError> {
        if let Some(appender) = self.file.as_ref().map(|f| &f.appender) {
            appender.barrier().await?;
        }
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

    /// Up to `limit` records of a stream from sequence number `from` on, in order. On a dedicated
    /// store, appends sent before (a commit its caller stopped waiting for) land or roll back first.
    pub async fn audit_records(&self, stream: &str, from: i64, limit: u32) -> Result<Vec<Record>, StoreError> {
        if let Some(appender) = self.file.as_ref().map(|f| &f.appender) {
            appender.barrier().await?;
        }
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
