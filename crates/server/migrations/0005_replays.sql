-- The SHA-256 of each signed webhook body: the same body under a new
-- delivery id is a replay (GitHub's redeliveries keep their delivery id).
ALTER TABLE deliveries ADD COLUMN body_sha256 TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_by_body ON deliveries (body_sha256);
