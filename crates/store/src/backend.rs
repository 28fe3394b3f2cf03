//! The two engines behind the store: which one a URL names, how it is opened, and how a query body
//! is run on either.
//!
//! The SQL is the same text for both engines (`$N` placeholders, `RETURNING`, plain types); only the
//! migrations differ. A body written once is compiled once per engine by [`on_pool!`] and
//! [`in_write_tx!`], so no trait object or generic bound stands between a query and its engine.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::StoreError;
use crate::migration;

/// How long a SQLite writer waits for another writer (another task, the CLI) before giving up.
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);

/// The first statement of every write transaction. On PostgreSQL its row lock also serializes
/// writers across replicas, so a transaction's reads see everything committed before it.
pub(crate) const BUMP_REVISION: &str = "UPDATE registry_revision SET revision = revision + 1 WHERE id = 1";

/// A connection pool of one engine or the other.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Backend {
    /// Opens the database a URL names and brings its schema up to date.
    /// `dedicated`: one connection, kept open, for a single task that uses the store in turn.
    pub(crate) async fn connect(url: &str, synced: bool, dedicated: bool) -> Result<Self, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(open_sqlite(url, synced, if dedicated { Role::Dedicated } else { Role::Shared }).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(open_postgres(url, dedicated).await?)
        } else {
            return Err(StoreError::Invalid(
                "unsupported store url: expected sqlite://path.db, sqlite::memory: or postgres://…".into(),
            ));
        };
        backend.migrate().await?;
        Ok(backend)
    }

    /// The engine's name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes every pooled connection.
    pub(crate) async fn close(&self) {
        match self {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Backend::Sqlite(pool) => {
                let migrator = migration::SQLITE.migrator().await?;
                // SQLite has no migration lock: when two processes migrate a fresh file at once, the
                // loser fails on a table the winner just created; a second run finds it all applied.
                if migrator.run(pool).await.is_err() {
                    migrator.run(pool).await?;
                }
            }
            Backend::Postgres(pool) => migration::POSTGRES.migrator().await?.run(pool).await?,
        }
        Ok(())
    }
}

/// The file a `sqlite:` URL names; `None` for other URLs and in-memory databases.
pub(crate) fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
    if !url.starts_with("sqlite:") || is_sqlite_memory(url) {
        return Ok(None);
    }
    Ok(Some(SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf()))
}

/// Whether a `sqlite:` URL names an in-memory database.
fn is_sqlite_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || query.split('&').any(|pair| pair == "mode=memory")
}

/// What a SQLite pool is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A pool of a few connections, for any caller.
    Shared,
    /// One connection kept open, for one task that uses the store in turn (the audit writer).
    Dedicated,
    /// A [`WalCheckpointer`]'s connection: never creates the file.
    Checkpointer,
}

/// A dedicated writer leaves checkpoints to its [`WalCheckpointer`], but still checkpoints itself
/// when the WAL passes this many pages (~62 MiB at 4 KiB pages): a checkpoint that runs beside a
/// writer rarely finds the whole WAL copied at the moment a commit starts, which is when SQLite
/// starts the WAL over, so without this backstop the WAL grows for as long as commits keep coming.
/// The backstop's checkpoint copies only what the checkpointer has not, then the WAL starts over;
/// its fsync stalls the commit it runs in, so it is set high: at 10 000 records a second about
/// once every four seconds (at 4 000 pages the audited gateway's worst latencies doubled). Unit
/// tests use a small one, so that they need not write hundreds of megabytes to cross it.
#[cfg(not(test))]
pub(crate) const WAL_BACKSTOP_PAGES: u32 = 16_000;
#[cfg(test)]
pub(crate) const WAL_BACKSTOP_PAGES: u32 = 1_000;
/// After a checkpoint, a WAL file larger than this is truncated to it.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// The settings of a dedicated writer's connection, whichever library holds it (sqlx's, or the
/// audit append thread's): durability, foreign keys, and checkpoints only as a backstop.
pub(crate) fn writer_pragmas(synced: bool) -> [(&'static str, String); 4] {
    [
        ("synchronous", (if synced { "FULL" } else { "NORMAL" }).to_owned()),
        ("foreign_keys", "ON".to_owned()),
        ("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string()),
        ("journal_size_limit", WAL_SIZE_LIMIT.to_string()),
    ]
}

async fn open_sqlite(url: &str, synced: bool, role: Role) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?.foreign_keys(true).busy_timeout(SQLITE_BUSY_TIMEOUT);
    if is_sqlite_memory(url) {
        // Every connection to `:memory:` would be a database of its own (sqlx names it for a shared
        // cache, whose table locks ignore the busy timeout): one connection, kept for the pool's life.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        return Ok(pool);
    }
    if let Some(parent) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let options = options
        .create_if_missing(role != Role::Checkpointer)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if synced { SqliteSynchronous::Full } else { SqliteSynchronous::Normal });
    // A dedicated connection keeps its page cache between transactions: in a pool, the next
    // transaction usually lands on another connection, which finds the file changed by the last
    // one and must drop its cache and read the pages again. It checkpoints the WAL only as a
    // backstop: a [`WalCheckpointer`] does it beside it.
    let options = match role {
        Role::Dedicated => writer_pragmas(synced).into_iter().fold(options, |o, (name, value)| o.pragma(name, value)),
        Role::Shared | Role::Checkpointer => options,
    };
    let pool = match role {
        Role::Dedicated => {
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        }
        Role::Shared => SqlitePoolOptions::new().max_connections(4),
        Role::Checkpointer => SqlitePoolOptions::new().max_connections(1),
    };
    Ok(pool.acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?)
}

/// How often a [`WalCheckpointer`] copies a dedicated writer's WAL into the database.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Keeps a dedicated SQLite writer's checkpoints off its commits. SQLite checkpoints the WAL in
/// whichever commit takes it past 1000 pages: that commit copies the pages into the database and
/// fsyncs it while everyone waiting on it waits too (a third of the commit time at 32 records a
/// commit, BENCHMARKS.md). The writer's connections checkpoint only past [`WAL_BACKSTOP_PAGES`];
/// this task runs a passive checkpoint on a connection of its own [`WAL_CHECKPOINT_EVERY`] after
/// the last one ended (it never waits for the writer, and does nothing when the WAL holds nothing
/// new), so the backstop's checkpoint finds little left to copy. While it runs, the writer's own
/// checkpoint cannot (SQLite skips it): it never runs back to back, and it stands aside for a
/// round when the WAL nears the backstop, so the writer's checkpoint gets its turn and the WAL
/// starts over. It stops when the store it serves is dropped or closed.
#[derive(Debug)]
pub(crate) struct WalCheckpointer {
    pool: SqlitePool,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl WalCheckpointer {
    /// For a dedicated store on a SQLite file (a URL [`sqlite_file`] names a file for).
    pub(crate) async fn start(url: &str, synced: bool) -> Result<Self, StoreError> {
        let pool = open_sqlite(url, synced, Role::Checkpointer).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let checkpoints = pool.clone();
        tokio::spawn(async move {
            let mut failing = false;
            let mut stand_aside = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(WAL_CHECKPOINT_EVERY) => {}
                }
                if std::mem::take(&mut stand_aside) {
                    continue;
                }
                // Rows: busy, pages in the WAL, pages copied. Failures are said once per change:
                // the writer's backstop keeps the WAL bounded meanwhile.
                match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&checkpoints)
                    .await
                {
                    Ok((_, wal_pages, _)) => {
                        stand_aside = wal_pages >= i64::from(WAL_BACKSTOP_PAGES) * 3 / 4;
                        if std::mem::take(&mut failing) {
                            tracing::info!("audit WAL checkpoints work again");
                        }
                    }
                    Err(sqlx::Error::PoolClosed) => break,
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %StoreError::from(e), "audit WAL checkpoint failed; the writer checkpoints itself meanwhile");
                        }
                    }
                }
            }
            checkpoints.close().await;
        });
        Ok(Self { pool, _stop: stop })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Invalid(format!("cannot create {}: {e}", dir.display())))
}

async fn open_postgres(url: &str, dedicated: bool) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?.application_name("portcullis");
    let pool = if dedicated {
        PgPoolOptions::new().max_connections(1).min_connections(1)
    } else {
        PgPoolOptions::new().max_connections(8)
    };
    Ok(pool.acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?)
}

/// Evaluates `$body` with `$pool` bound to the engine's pool (the body is compiled once per engine).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::backend::Backend::Sqlite($pool) => $body,
            $crate::backend::Backend::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in one write transaction (bound to `$tx`) that first bumps the registry revision.
/// The body yields `Result<(value, changed)>`: an error or an unchanged store rolls back (so the
/// revision moves only when something did), otherwise the transaction commits.
macro_rules! in_write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        match &$store.backend {
            $crate::backend::Backend::Sqlite(pool) => {
                // IMMEDIATE takes the write lock up front (waiting up to the busy timeout) rather than
                // failing when a read transaction later tries to upgrade.
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                $crate::backend::in_write_tx!(@run $tx, $body)
            }
            $crate::backend::Backend::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                $crate::backend::in_write_tx!(@run $tx, $body)
            }
        }
    };
    (@run $tx:ident, $body:expr) => {{
        sqlx::query($crate::backend::BUMP_REVISION).execute(&mut *$tx).await?;
        let outcome: Result<(_, bool), $crate::StoreError> = async { $body }.await;
        match outcome {
            Ok((value, true)) => {
                $tx.commit().await?;
                Ok(value)
            }
            Ok((value, false)) => {
                $tx.rollback().await?;
                Ok(value)
            }
            Err(e) => {
                // The error is the news; a failed rollback only means the connection is gone.
                let _ = $tx.rollback().await;
                Err(e)
            }
        }
    }};
}

pub(crate) use {in_write_tx, on_pool};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_in_memory_sqlite_urls() {
        assert!(is_sqlite_memory("sqlite::memory:"));
        assert!(is_sqlite_memory("sqlite://:memory:"));
        assert!(is_sqlite_memory("sqlite://db?mode=memory"));
        assert!(!is_sqlite_memory("sqlite://portcullis.db"));
        assert!(!is_sqlite_memory("sqlite:memory.db"));
    }

    #[test]
    fn the_writer_settings_take_on_a_synchronous_connection_too() {
        let conn = rusqlite::Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        for synced in [true, false] {
            for (name, value) in writer_pragmas(synced) {
                conn.pragma_update(None, name, value).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            let read = |name: &str| -> i64 {
                conn.pragma_query_value(None, name, |row| row.get(0)).unwrap_or_else(|e| panic!("{name}: {e}"))
            };
            assert_eq!(read("synchronous"), if synced { 2 } else { 1 });
            assert_eq!(read("foreign_keys"), 1);
            assert_eq!(read("wal_autocheckpoint"), i64::from(WAL_BACKSTOP_PAGES));
            assert_eq!(read("journal_size_limit"), i64::try_from(WAL_SIZE_LIMIT).unwrap_or(i64::MAX));
        }
    }
}
