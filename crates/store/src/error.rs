//! What can go wrong in the store, as values a caller can act on.

/// A store failure. Messages carry no SQL text and no credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record already exists (an entry's name and version are taken).
    #[error("{what} already exists")]
    Duplicate { what: String },
    /// No such record.
    #[error("{what} not found")]
    NotFound { what: String },
    /// Someone else changed the record since the caller read it (optimistic concurrency): read again.
    #[error("{what} was changed concurrently")]
    Conflict { what: String },
    /// The request cannot be carried out as asked (bad URL, nothing to approve, empty name).
    #[error("{0}")]
    Invalid(String),
    /// The database failed or is unreachable.
    #[error("store backend: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error;
        match e {
            // A URL's parse error never echoes the URL (which may hold a password).
            Error::Configuration(e) => StoreError::Invalid(format!("store url: {e}")),
            Error::Database(e) => match e.code() {
                Some(code) => StoreError::Backend(format!("{} (code {code})", e.message())),
                None => StoreError::Backend(e.message().to_owned()),
            },
            Error::PoolTimedOut => StoreError::Backend("timed out waiting for a database connection".into()),
            Error::PoolClosed => StoreError::Backend("the connection pool is closed".into()),
            Error::Io(e) => StoreError::Backend(format!("i/o: {e}")),
            Error::Tls(e) => StoreError::Backend(format!("tls: {e}")),
            Error::Migrate(e) => StoreError::Backend(format!("migration: {e}")),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(format!("migration: {e}"))
    }
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
