//! The engines a test runs on: SQLite in a file of a temporary folder, and PostgreSQL in a database
//! created for the test on the server named by `PORTCULLIS_TEST_POSTGRES` (or `DATABASE_URL`) and
//! dropped afterwards, whether the test passed or not.

use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};

use futures::FutureExt;
use portcullis_store::Store;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Declares each listed `async fn name(db: TestDb)` as a test on SQLite and one on PostgreSQL.
#[allow(unused_macros)]
macro_rules! on_both_engines {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::engine::run(crate::engine::Engine::Sqlite, crate::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::engine::run(crate::engine::Engine::Postgres, crate::$name).await;
                }
            )+
        }
    };
}
pub(crate) use on_both_engines;

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test.
pub struct TestDb {
    pub engine: Engine,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new store on the test's database: each call is a separate connection pool, as another
    /// gateway replica or the CLI would open (and each applies the migrations).
    pub async fn store(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to the {:?} test database: {e}", self.engine))
    }

    /// A dedicated store on the test's database, as the audit writer opens.
    #[allow(dead_code)]
    pub async fn dedicated(&self) -> Store {
        Store::connect_dedicated(&self.url, false)
            .await
            .unwrap_or_else(|e| panic!("connect to the {:?} test database: {e}", self.engine))
    }

    /// Runs one SQL statement on the database directly (as someone with write access to it
    /// would), returning the rows it changed.
    #[allow(dead_code)]
    pub async fn execute(&self, sql: &str) -> u64 {
        match self.engine {
            Engine::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect");
                sqlx::query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}")).rows_affected()
            }
            Engine::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect");
                sqlx::query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}")).rows_affected()
            }
        }
    }
}

/// Runs a test body on a fresh database of the engine, then removes the database.
pub async fn run<F, Fut>(engine: Engine, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let (db, dropper) = match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary folder");
            let url = format!("sqlite://{}", dir.path().join("registry.db").display());
            (TestDb { engine, url, _dir: Some(dir) }, None)
        }
        Engine::Postgres => {
            let server = postgres_server_url();
            let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
            admin(&server, &format!("CREATE DATABASE {name}")).await;
            let url = with_database(&server, &name);
            (TestDb { engine, url, _dir: None }, Some((server, name)))
        }
    };
    let outcome = AssertUnwindSafe(test(db)).catch_unwind().await;
    if let Some((server, name)) = dropper {
        // FORCE ends the connections of pools a failed test left open.
        admin(&server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
}

fn postgres_server_url() -> String {
    std::env::var("PORTCULLIS_TEST_POSTGRES").or_else(|_| std::env::var("DATABASE_URL")).unwrap_or_else(|_| {
        panic!(
            "the store's PostgreSQL tests need a server: set PORTCULLIS_TEST_POSTGRES (or DATABASE_URL), \
             e.g. PORTCULLIS_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres (scripts/test does)"
        )
    })
}

async fn admin(server: &str, statement: &str) {
    let mut conn = PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the PostgreSQL test server (PORTCULLIS_TEST_POSTGRES): {e}"));
    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    let _ = conn.close().await;
}

/// The server URL with its database (the path) replaced, query parameters kept.
fn with_database(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[test]
fn replaces_the_database_of_a_server_url() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "t2"), "postgres://u:p@h/t2?sslmode=disable");
    assert_eq!(with_database("postgresql://h:5432", "t3"), "postgresql://h:5432/t3");
}
