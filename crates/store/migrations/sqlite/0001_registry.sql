-- Registry entries, tool-metadata pins, drift log and the registry revision counter (SQLite).
-- Kept in step with ../postgres/0001_registry.sql: same tables, columns and constraints.

-- One row; bumped by every write so that replicas and the CLI can detect changes cheaply.
CREATE TABLE registry_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO registry_revision (id, revision) VALUES (1, 0);

-- `id` records insert order (AUTOINCREMENT never reuses one), used when versions are not semver.
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL CHECK (name <> ''),
    version TEXT NOT NULL CHECK (version <> ''),
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'revoked')),
    -- the server.json document as JSON text, key order preserved
    document TEXT NOT NULL,
    revision INTEGER NOT NULL CHECK (revision >= 1),
    updated_by TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE pins (
    server TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('tool', 'prompt', 'resource_template')),
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('approved', 'quarantined', 'new', 'removed')),
    approved_hash TEXT,
    approved_metadata TEXT,
    observed_hash TEXT,
    observed_metadata TEXT,
    approved_by TEXT,
    approved_at_ms INTEGER,
    override_reason TEXT,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (server, kind, name),
    CHECK ((approved_hash IS NULL) = (approved_metadata IS NULL)),
    CHECK ((observed_hash IS NULL) = (observed_metadata IS NULL))
);

CREATE TABLE drift (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('tool', 'prompt', 'resource_template')),
    name TEXT NOT NULL,
    change TEXT NOT NULL CHECK (change IN ('new', 'changed', 'removed', 'returned')),
    old_hash TEXT,
    new_hash TEXT,
    diff TEXT NOT NULL,
    -- scan findings as JSON text
    findings TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX drift_by_server ON drift (server, id);
