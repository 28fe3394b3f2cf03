//! The schema migrations of each dialect, embedded at compile time and applied at `connect`.
//!
//! The files live in `migrations/<dialect>/` and are named `<version>_<description>.sql`, as
//! `sqlx-cli` names them, so that its `migrate info` reads our `_sqlx_migrations` table. A new file
//! must also be listed here (a test checks that the lists and the folders agree).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// One dialect's migrations: file name and SQL, in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migrations(&'static [(&'static str, &'static str)]);

/// The SQLite schema.
pub(crate) const SQLITE: Migrations = Migrations(&[
    ("0001_registry.sql", include_str!("../migrations/sqlite/0001_registry.sql")),
    ("0002_api_keys.sql", include_str!("../migrations/sqlite/0002_api_keys.sql")),
    ("0003_audit.sql", include_str!("../migrations/sqlite/0003_audit.sql")),
]);

/// The PostgreSQL schema.
pub(crate) const POSTGRES: Migrations = Migrations(&[
    ("0001_registry.sql", include_str!("../migrations/postgres/0001_registry.sql")),
    ("0002_api_keys.sql", include_str!("../migrations/postgres/0002_api_keys.sql")),
    ("0003_audit.sql", include_str!("../migrations/postgres/0003_audit.sql")),
]);

impl Migrations {
    /// A migrator over these migrations (PostgreSQL: holding an advisory lock while it runs).
    pub(crate) async fn migrator(self) -> Result<Migrator, MigrateError> {
        Migrator::new(self).await
    }

    fn resolve_now(self) -> Result<Vec<Migration>, BoxDynError> {
        self.0
            .iter()
            .map(|(file, sql)| {
                let (version, description) = file
                    .strip_suffix(".sql")
                    .and_then(|stem| stem.split_once('_'))
                    .ok_or_else(|| format!("migration file {file} is not named <version>_<description>.sql"))?;
                let version: i64 =
                    version.parse().map_err(|_| format!("migration file {file} has no numeric version"))?;
                Ok(Migration::new(
                    version,
                    Cow::Owned(description.replace('_', " ")),
                    MigrationType::Simple,
                    Cow::Borrowed(*sql),
                    false,
                ))
            })
            .collect()
    }
}

impl<'s> MigrationSource<'s> for Migrations {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move { self.resolve_now() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn embedded_lists_match_the_migration_folders() {
        for (dialect, migrations) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let embedded: Vec<String> = migrations.0.iter().map(|(file, _)| (*file).to_owned()).collect();
            assert_eq!(embedded, files(dialect), "migrations/{dialect}");
        }
    }

    #[test]
    fn both_dialects_have_the_same_versions() {
        let versions = |m: Migrations| -> Vec<i64> {
            m.resolve_now().unwrap_or_else(|e| panic!("{e}")).iter().map(|m| m.version).collect()
        };
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert_eq!(versions(SQLITE), vec![1, 2, 3]);
    }
}
