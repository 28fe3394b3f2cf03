//! Registry entries: one row per (name, version), guarded by a per-row revision.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::{in_write_tx, on_pool};
use crate::error::is_unique_violation;
use crate::{EntryRecord, EntryStatus, Store, StoreError, json_text, json_value};

/// An `entries` row as decoded: name, version, status, document, revision,
/// updated_by, updated_at_ms, id (insert order).
type EntryRow = (String, String, String, String, i64, String, i64, i64);

const SELECT_BY_NAME: &str = "SELECT name, version, status, document, revision, updated_by, updated_at_ms, id \
     FROM entries WHERE name = $1";
const SELECT_ONE: &str = "SELECT name, version, status, document, revision, updated_by, updated_at_ms, id \
     FROM entries WHERE name = $1 AND version = $2";
const SELECT_ALL: &str = "SELECT name, version, status, document, revision, updated_by, updated_at_ms, id FROM entries";

/// What an entry update changes.
enum Change<'a> {
    Document(&'a serde_json::Value),
    Status(EntryStatus),
}

impl Store {
    /// Adds an entry at revision 1 (the record's own `revision` is ignored).
    ///
    /// `Duplicate` if the name and version are already registered.
    pub async fn insert_entry(&self, entry: &EntryRecord) -> Result<(), StoreError> {
        if entry.name.is_empty() || entry.version.is_empty() {
            return Err(StoreError::Invalid("a registry entry needs a name and a version".into()));
        }
        let document = json_text(&entry.document)?;
        in_write_tx!(self, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO entries (name, version, status, document, revision, updated_by, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, 1, $5, $6)",
            )
            .bind(&entry.name)
            .bind(&entry.version)
            .bind(entry.status.as_str())
            .bind(&document)
            .bind(&entry.updated_by)
            .bind(entry.updated_at_ms)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => Ok(((), true)),
                Err(e) if is_unique_violation(&e) => {
                    Err(StoreError::Duplicate { what: entry_what(&entry.name, &entry.version) })
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Replaces an entry's document if its revision is still `expected_revision`; returns the new revision.
    ///
    /// `Conflict` if the entry changed since it was read, `NotFound` if there is no such entry.
    pub async fn update_entry_document(
        &self,
        name: &str,
        version: &str,
        document: &serde_json::Value,
        expected_revision: i64,
        actor: &str,
    ) -> Result<i64, StoreError> {
        self.change_entry(name, version, Change::Document(document), expected_revision, actor).await
    }

    /// Sets an entry's status if its revision is still `expected_revision`; returns the new revision.
    ///
    /// Of two callers (tasks, replicas) naming the same revision exactly one succeeds; the other gets
    /// `Conflict`. `NotFound` if there is no such entry.
    pub async fn set_entry_status(
        &self,
        name: &str,
        version: &str,
        status: EntryStatus,
        expected_revision: i64,
        actor: &str,
    ) -> Result<i64, StoreError> {
        self.change_entry(name, version, Change::Status(status), expected_revision, actor).await
    }

    /// One version of an entry, or with `version: None` its newest version: the highest by semantic
    /// versioning among the versions that parse as semver, or the last inserted if none does.
    pub async fn get_entry(&self, name: &str, version: Option<&str>) -> Result<Option<EntryRecord>, StoreError> {
        match version {
            Some(version) => {
                let row: Option<EntryRow> = on_pool!(self, |pool| {
                    sqlx::query_as(SELECT_ONE).bind(name).bind(version).fetch_optional(pool).await?
                });
                row.map(entry_from).transpose()
            }
            None => {
                let rows: Vec<EntryRow> =
                    on_pool!(self, |pool| sqlx::query_as(SELECT_BY_NAME).bind(name).fetch_all(pool).await?);
                newest(rows).map(entry_from).transpose()
            }
        }
    }

    /// Every version of every entry, sorted by name, then version (see [`Store::list_versions`]).
    pub async fn list_entries(&self) -> Result<Vec<EntryRecord>, StoreError> {
        let rows: Vec<EntryRow> = on_pool!(self, |pool| sqlx::query_as(SELECT_ALL).fetch_all(pool).await?);
        sorted(rows)
    }

    /// Every version of one entry, oldest first: semver versions in semver order, then any others
    /// by text.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<EntryRecord>, StoreError> {
        let rows: Vec<EntryRow> =
            on_pool!(self, |pool| sqlx::query_as(SELECT_BY_NAME).bind(name).fetch_all(pool).await?);
        sorted(rows)
    }

    async fn change_entry(
        &self,
        name: &str,
        version: &str,
        change: Change<'_>,
        expected_revision: i64,
        actor: &str,
    ) -> Result<i64, StoreError> {
        let (sql, value) = match change {
            Change::Document(document) => (
                "UPDATE entries SET document = $1, revision = revision + 1, updated_by = $2, updated_at_ms = $3 \
                 WHERE name = $4 AND version = $5 AND revision = $6 RETURNING revision",
                json_text(document)?,
            ),
            Change::Status(status) => (
                "UPDATE entries SET status = $1, revision = revision + 1, updated_by = $2, updated_at_ms = $3 \
                 WHERE name = $4 AND version = $5 AND revision = $6 RETURNING revision",
                status.as_str().to_owned(),
            ),
        };
        let now = now_ms();
        in_write_tx!(self, |tx| {
            let updated: Option<(i64,)> = sqlx::query_as(sql)
                .bind(&value)
                .bind(actor)
                .bind(now)
                .bind(name)
                .bind(version)
                .bind(expected_revision)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((revision,)) = updated {
                return Ok((revision, true));
            }
            let exists: Option<(i64,)> =
                sqlx::query_as("SELECT revision FROM entries WHERE name = $1 AND version = $2")
                    .bind(name)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            let what = entry_what(name, version);
            Err(match exists {
                Some(_) => StoreError::Conflict { what },
                None => StoreError::NotFound { what },
            })
        })
    }
}

fn entry_what(name: &str, version: &str) -> String {
    format!("registry entry {name} {version}")
}

fn entry_from(
    (name, version, status, document, revision, updated_by, updated_at_ms, _id): EntryRow,
) -> Result<EntryRecord, StoreError> {
    let document = json_value(&document, &entry_what(&name, &version))?;
    Ok(EntryRecord {
        status: EntryStatus::parse(&status)?,
        name,
        version,
        document,
        revision,
        updated_by,
        updated_at_ms,
    })
}

/// The newest of one entry's versions (see [`Store::get_entry`]).
fn newest(rows: Vec<EntryRow>) -> Option<EntryRow> {
    let by_semver = rows
        .iter()
        .enumerate()
        .filter_map(|(i, row)| Some((semver::Version::parse(&row.1).ok()?, i)))
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, i)| i);
    let index = by_semver.or_else(|| rows.iter().enumerate().max_by_key(|(_, row)| row.7).map(|(i, _)| i))?;
    rows.into_iter().nth(index)
}

/// Rows as records, sorted by name (byte order, the same on both engines), then version.
fn sorted(rows: Vec<EntryRow>) -> Result<Vec<EntryRecord>, StoreError> {
    let mut records = rows.into_iter().map(entry_from).collect::<Result<Vec<_>, _>>()?;
    records.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| version_order(&a.version, &b.version)));
    Ok(records)
}

/// Semver versions first, in semver order; then the others by text.
fn version_order(a: &str, b: &str) -> Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Milliseconds since the Unix epoch (entry updates are stamped by the store).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: &str, id: i64) -> EntryRow {
        ("n".into(), version.into(), "pending".into(), "{}".into(), 1, "t".into(), 0, id)
    }

    #[test]
    fn newest_prefers_the_highest_semver() {
        let rows = vec![row("1.10.0", 1), row("1.9.0", 2), row("latest", 3), row("2.0.0-rc.1", 4), row("1.2.3", 5)];
        assert_eq!(newest(rows).map(|r| r.1).as_deref(), Some("2.0.0-rc.1"));
    }

    #[test]
    fn newest_falls_back_to_the_last_inserted() {
        let rows = vec![row("beta", 1), row("alpha", 7), row("gamma", 3)];
        assert_eq!(newest(rows).map(|r| r.1).as_deref(), Some("alpha"));
        assert!(newest(Vec::new()).is_none());
    }

    #[test]
    fn versions_sort_semver_first_then_by_text() {
        let mut versions = vec!["b", "1.10.0", "a", "1.9.0", "1.9.0-rc.1"];
        versions.sort_by(|a, b| version_order(a, b));
        assert_eq!(versions, ["1.9.0-rc.1", "1.9.0", "1.10.0", "a", "b"]);
    }
}
