-- Tidesync server schema, version 1. Portable between SQLite and PostgreSQL:
-- text and bigint columns only; times are milliseconds since the Unix epoch.

-- One row per tenant: the last sequence number given to a change. Every
-- push transaction updates this row first, so it holds the tenant's write
-- lock until it commits (PostgreSQL row lock; SQLite's single writer).
CREATE TABLE tenant_counters (
    tenant_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);

-- Latest state of every record, tombstones included.
CREATE TABLE records (
    tenant_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    is_deleted BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    sync_status TEXT,
    PRIMARY KEY (tenant_id, entity_type, id)
);
CREATE INDEX records_by_seq ON records (tenant_id, seq);
CREATE INDEX records_by_updated_at ON records (tenant_id, updated_at);
CREATE INDEX records_by_sync_status ON records (tenant_id, entity_type, sync_status);

-- Every mutation id a client has had applied (or resolved as a conflict),
-- so that a replay is answered "duplicate" instead of being applied again.
CREATE TABLE applied_mutations (
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    mutation_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_id, mutation_id)
);
