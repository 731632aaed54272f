-- Deliveries as GitHub sent them, keyed by X-GitHub-Delivery so a repeated
-- delivery is recorded once.
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    repository TEXT,
    payload TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    state TEXT NOT NULL
);

-- Workflow runs; the queue is the runs in state 'queued', and a run being
-- worked on holds a lease that its worker renews.
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    sha TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    workflow_file TEXT NOT NULL,
    state TEXT NOT NULL,
    conclusion TEXT,
    attempts BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);

CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, created_at);
