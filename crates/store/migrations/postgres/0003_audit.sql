-- The audit trail (postgres). Kept in step with the other dialect's 0003_audit.sql.
-- Records are appended to streams (one per gateway instance and event class); each row's digest
-- covers every column but the chain's own, and its hash links that digest to the previous row's
-- hash. Rows are only ever inserted, and deleted from a stream's start by retention.
CREATE TABLE audit_records (
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL CHECK (seq > 0),
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    correlation TEXT NOT NULL,
    request TEXT NOT NULL,
    parent TEXT NOT NULL,
    principal TEXT NOT NULL,
    server TEXT NOT NULL,
    item TEXT NOT NULL,
    outcome TEXT NOT NULL,
    -- a JSON object
    body TEXT NOT NULL,
    digest TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE INDEX audit_records_time ON audit_records (time_ms);
CREATE INDEX audit_records_correlation ON audit_records (correlation);
CREATE INDEX audit_records_principal ON audit_records (principal, time_ms);
CREATE INDEX audit_records_item ON audit_records (server, item, time_ms);

-- Each stream's last record: appends lock this row, so writers on one stream take turns.
CREATE TABLE audit_heads (
    stream TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- Signed statements of a stream's head and its retention floor.
CREATE TABLE audit_checkpoints (
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    floor BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
);
