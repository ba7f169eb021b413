-- When the winning change of a record was made on its client (milliseconds
-- since the epoch; never later than when the server stored it).
-- last-write-wins compares edit times with it: `updated_at` is when the
-- server stored the change, which an edit made offline earlier would lose to.
-- NULL for rows written before this column existed: `updated_at` stands in.
ALTER TABLE records ADD COLUMN changed_at BIGINT;
