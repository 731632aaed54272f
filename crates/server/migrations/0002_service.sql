-- What the service needs beyond the bare queue: why a delivery was skipped
-- and when to retry it, what a run was triggered by, its concurrency group,
-- per-job results, the worker hosts, and recent errors for the dashboard.
ALTER TABLE deliveries ADD COLUMN note TEXT;
ALTER TABLE deliveries ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN processed_at BIGINT;

ALTER TABLE runs ADD COLUMN event TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN workflow_name TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN pr_number BIGINT;
ALTER TABLE runs ADD COLUMN installation_id BIGINT;
ALTER TABLE runs ADD COLUMN concurrency_group TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN note TEXT;

CREATE INDEX IF NOT EXISTS runs_by_group ON runs (concurrency_group, state);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, next_attempt_at);

CREATE TABLE IF NOT EXISTS jobs (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    conclusion TEXT,
    worker TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    steps TEXT NOT NULL DEFAULT '[]',
    summary TEXT NOT NULL DEFAULT '',
    log_tail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, name)
);

CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    max_runs BIGINT NOT NULL,
    max_vms BIGINT NOT NULL,
    running BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS service_errors (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS service_errors_by_time ON service_errors (at);
