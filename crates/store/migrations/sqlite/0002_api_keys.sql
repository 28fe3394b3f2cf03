-- Workload API keys (sqlite). Kept in step with the other dialect's 0002_api_keys.sql.
-- Only a SHA-256 of each key's secret part is kept; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY CHECK (id <> ''),
    name TEXT NOT NULL,
    principal TEXT NOT NULL CHECK (principal <> ''),
    -- JSON arrays of strings
    groups_json TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    tenant TEXT,
    hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER
);
