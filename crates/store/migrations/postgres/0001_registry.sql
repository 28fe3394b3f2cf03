-- Registry entries, tool-metadata pins, drift log and the registry revision counter (PostgreSQL).
-- Kept in step with ../sqlite/0001_registry.sql: same tables, columns and constraints.

-- One row; bumped by every write so that replicas and the CLI can detect changes cheaply. Every
-- write transaction updates it first, so its row lock also serializes writers across replicas.
CREATE TABLE registry_revision (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO registry_revision (id, revision) VALUES (1, 0);

-- `id` records insert order, used when versions are not semver.
CREATE TABLE entries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL CHECK (name <> ''),
    version TEXT NOT NULL CHECK (version <> ''),
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'revoked')),
    -- the server.json document as JSON text (not jsonb: key order is preserved)
    document TEXT NOT NULL,
    revision BIGINT NOT NULL CHECK (revision >= 1),
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
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
    approved_at_ms BIGINT,
    override_reason TEXT,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (server, kind, name),
    CHECK ((approved_hash IS NULL) = (approved_metadata IS NULL)),
    CHECK ((observed_hash IS NULL) = (observed_metadata IS NULL))
);

CREATE TABLE drift (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('tool', 'prompt', 'resource_template')),
    name TEXT NOT NULL,
    change TEXT NOT NULL CHECK (change IN ('new', 'changed', 'removed', 'returned')),
    old_hash TEXT,
    new_hash TEXT,
    diff TEXT NOT NULL,
    -- scan findings as JSON text
    findings TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX drift_by_server ON drift (server, id);
