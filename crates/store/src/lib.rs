//! Persistence for the registry: entries, tool-metadata pins and the drift log, on SQLite (the
//! embedded default: one file, WAL) or PostgreSQL (several gateway replicas), chosen by URL.
//!
//! Architecture invariant: only this crate knows SQL. Callers get plain records and [`StoreError`]s.
//!
//! Every write is one transaction that also bumps a single registry revision counter, so a gateway
//! can poll [`Store::registry_revision`] to pick up changes made by the CLI or another replica. A
//! write that turns out to change nothing (no pin to remove, nothing to approve) is rolled back and
//! leaves the counter as it was. Entry rows carry their own revision for optimistic concurrency:
//! of two writers naming the same expected revision, exactly one wins and the other gets
//! [`StoreError::Conflict`].

mod api_key;
mod audit;
mod backend;
mod drift;
mod entry;
mod error;
mod migration;
mod pin;
mod record;

pub use api_key::ApiKeyRecord;
pub use audit::AuditQuery;
pub use error::StoreError;
pub use record::{DriftChange, DriftRecord, EntryRecord, EntryStatus, Observation, PinKind, PinRecord, PinState};

use backend::{Backend, on_pool};

/// A handle on the registry database; cheap to clone (the clones share one connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// What a dedicated store on a SQLite file runs beside its connection.
    file: Option<std::sync::Arc<DedicatedFile>>,
}

/// A dedicated SQLite file store's helpers.
#[derive(Debug)]
struct DedicatedFile {
    /// The audit appends, on a synchronous connection of their own.
    appender: audit::Appender,
    /// The checkpoints, run beside the writer.
    wal: backend::WalCheckpointer,
}

impl Store {
    /// Opens the database a URL names and applies pending migrations.
    ///
    /// `sqlite://path/to/file.db` (relative to the working directory; `sqlite:///abs/file.db` for an
    /// absolute path; the file and its folder are created if missing), `sqlite::memory:` (for tests),
    /// or `postgres://user@host:port/database`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::connect(url, false, false).await?, file: None })
    }

    /// As [`Store::connect`] (or [`Store::connect_synced`] with `synced`), on one connection kept
    /// open, for one task that uses the store in turn, such as the audit writer: its SQLite
    /// page cache stays warm from one transaction to the next. On a SQLite file, every audit append
    /// runs on a thread of its own with a synchronous connection, in the order sent, and the WAL is
    /// checkpointed beside the writer, not in its commits (bar a backstop that keeps it bounded).
    pub async fn connect_dedicated(url: &str, synced: bool) -> Result<Store, StoreError> {
        let backend = Backend::connect(url, synced, true).await?;
        let file = match backend::sqlite_file(url)? {
            Some(path) => Some(std::sync::Arc::new(DedicatedFile {
                appender: audit::Appender::start(path, synced)?,
                wal: backend::WalCheckpointer::start(url, synced).await?,
            })),
            None => None,
        };
        Ok(Store { backend, file })
    }

    /// As [`Store::connect`], but a SQLite commit also survives a power cut (`synchronous=FULL`:
    /// an fsync per commit); PostgreSQL commits are durable either way.
    pub async fn connect_synced(url: &str) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::connect(url, true, false).await?, file: None })
    }

    /// The engine in use: `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The registry revision: a counter that every committed write moves forward. One cheap read.
    pub async fn registry_revision(&self) -> Result<i64, StoreError> {
        let (revision,): (i64,) = on_pool!(self, |pool| {
            sqlx::query_as("SELECT revision FROM registry_revision WHERE id = 1").fetch_one(pool).await?
        });
        Ok(revision)
    }

    /// Closes the connections (waiting for the ones in use); later calls fail.
    pub async fn close(&self) {
        if let Some(file) = &self.file {
            file.appender.close().await;
        }
        self.backend.close().await;
        if let Some(file) = &self.file {
            file.wal.close().await;
        }
    }
}

/// The JSON text a value is stored as.
fn json_text(value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("cannot serialize JSON: {e}")))
}

/// A stored JSON text, parsed back.
fn json_value(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("unreadable JSON stored in {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_unknown_url_schemes_without_echoing_them() {
        let err = Store::connect("mysql://root:hunter2@db/registry").await.err();
        match err {
            Some(StoreError::Invalid(message)) => assert!(!message.contains("hunter2"), "{message}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn sqlite_file_uses_wal_normal_sync_busy_timeout_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("nested").join("registry.db");
        let store = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(path.is_file(), "the file is created with its folder");
        let Backend::Sqlite(pool) = &store.backend else { panic!("expected sqlite") };
        let text = |sql: &'static str| async move {
            let (value,): (String,) =
                sqlx::query_as(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            value
        };
        let int = |sql: &'static str| async move {
            let (value,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            value
        };
        assert_eq!(text("PRAGMA journal_mode").await, "wal");
        assert_eq!(int("PRAGMA synchronous").await, 1, "NORMAL");
        assert_eq!(int("PRAGMA foreign_keys").await, 1);
        assert!(int("PRAGMA busy_timeout").await >= 1000);
        store.close().await;
    }

    /// An audit entry with a body of `body` bytes.
    fn audit_entry(i: i64, body: usize) -> portcullis_audit::Entry {
        portcullis_audit::Entry {
            time_ms: i,
            kind: "call".to_owned(),
            correlation: format!("{i:032x}"),
            request: format!("{i:016x}"),
            parent: String::new(),
            principal: "p".to_owned(),
            server: "demo".to_owned(),
            item: "echo".to_owned(),
            outcome: "ok".to_owned(),
            body: format!("{{\"n\":\"{}\"}}", "x".repeat(body)),
        }
    }

    async fn dedicated(path: &std::path::Path) -> Store {
        Store::connect_dedicated(&format!("sqlite://{}", path.display()), false).await.unwrap_or_else(|e| panic!("{e}"))
    }

    fn file_size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    #[tokio::test]
    async fn a_dedicated_sqlite_writer_leaves_checkpoints_to_its_checkpointer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.db");
        let store = dedicated(&path).await;
        let Backend::Sqlite(pool) = &store.backend else { panic!("expected sqlite") };
        let (auto,): (i64,) =
            sqlx::query_as("PRAGMA wal_autocheckpoint").fetch_one(pool).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(auto, i64::from(backend::WAL_BACKSTOP_PAGES), "the writer checkpoints only as a backstop");
        assert!(store.file.is_some(), "audit appends go to a thread of their own");
        let memory = Store::connect_dedicated("sqlite::memory:", false).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(memory.file.is_none(), "one connection holds an in-memory database");
        // The checkpointer's first passes copy what the migrations left in the WAL.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let before = file_size(&path);
        // Far below the backstop: only the checkpointer copies these records into the database file.
        let batch = [("s".to_owned(), (0..400).map(|i| audit_entry(i, 500)).collect())];
        store.append_audit(&batch).await.unwrap_or_else(|e| panic!("{e}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while file_size(&path) <= before {
            assert!(std::time::Instant::now() < deadline, "the database file never grew past {before} bytes");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_while_appends_never_pause() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.db");
        let wal = dir.path().join("audit.db-wal");
        let store = dedicated(&path).await;
        // Ten times the backstop in records (unit tests build with a small one), committed back to
        // back while the checkpointer runs beside them: a checkpoint beside a busy writer rarely
        // finds the WAL wholly copied when a commit starts (the only moment the WAL starts over),
        // so without the backstop the WAL grows by all of it (and more: index pages).
        let backstop = u64::from(backend::WAL_BACKSTOP_PAGES) * 4096;
        let mut largest = 0;
        for round in 0..200 {
            let batch = [("s".to_owned(), (0..100).map(|i| audit_entry(round * 100 + i, 2048)).collect())];
            store.append_audit(&batch).await.unwrap_or_else(|e| panic!("{e}"));
            largest = largest.max(file_size(&wal));
        }
        // The backstop, one batch past it, and what lands while a checkpointer run keeps the
        // backstop's checkpoint from running.
        assert!(largest < 4 * backstop, "the WAL reached {largest} bytes (backstop {backstop})");
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_for_a_record_waits_for_the_append_in_flight() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.db");
        let store = dedicated(&path).await;
        // Someone else holds the write lock: the append waits for it.
        let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_or_else(|e| panic!("{e}"));
        let batch = [("s".to_owned(), vec![audit_entry(1, 10)])];
        let mut appending = std::pin::pin!(store.append_audit(&batch));
        // Its first poll hands the append to the thread, which waits for the lock.
        assert!(futures::poll!(appending.as_mut()).is_pending(), "the append should wait for the lock");
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            sqlx::query("COMMIT").execute(&mut other).await.unwrap_or_else(|e| panic!("{e}"));
        });
        // A spool replay asks whether the record is there: the answer comes after the append
        // in flight has landed, so the replay does not write it a second time.
        let has = store.audit_has("s", &audit_entry(1, 10)).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(has, "the check ran before the append in flight landed");
        release.await.unwrap_or_else(|e| panic!("{e}"));
        appending.await.unwrap_or_else(|e| panic!("{e}"));
        store.close().await;
    }

    #[tokio::test]
    async fn an_append_after_close_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = dedicated(&dir.path().join("audit.db")).await;
        let batch = [("s".to_owned(), vec![audit_entry(1, 10)])];
        store.append_audit(&batch).await.unwrap_or_else(|e| panic!("{e}"));
        store.close().await;
        let refused = tokio::time::timeout(std::time::Duration::from_secs(5), store.append_audit(&batch)).await;
        assert!(
            matches!(&refused, Ok(Err(StoreError::Backend(m))) if m.contains("append thread has stopped")),
            "{refused:?}"
        );
        let barrier =
            tokio::time::timeout(std::time::Duration::from_secs(5), store.audit_has("s", &audit_entry(1, 10))).await;
        assert!(matches!(&barrier, Ok(Err(StoreError::Backend(_)))), "{barrier:?}");
    }

    #[tokio::test]
    async fn in_memory_sqlite_keeps_its_data_across_calls() {
        let store = Store::connect("sqlite::memory:").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.backend_name(), "sqlite");
        store.delete_pins("nobody").await.unwrap_or_else(|e| panic!("{e}"));
        store
            .observe("s", PinKind::Tool, "t", "h1", &serde_json::json!({"name": "t"}), 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.pins("s").await.unwrap_or_else(|e| panic!("{e}")).len(), 1);
        assert_eq!(store.registry_revision().await.unwrap_or_else(|e| panic!("{e}")), 1);
    }
}
