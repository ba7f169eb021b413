-- Stored records whose JSON cannot be read. Such a row is never served as
-- something else: it is flagged in `records` (pulls, verify and fetch pass
-- over it; its version stays, so a later write continues the sequence and
-- clears the flag) and its raw text is kept here for an operator.
ALTER TABLE records ADD COLUMN quarantined BIGINT NOT NULL DEFAULT 0;

CREATE TABLE quarantined_records (
    tenant_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    data TEXT NOT NULL,
    reason TEXT NOT NULL,
    found_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, entity_type, id, seq)
);
