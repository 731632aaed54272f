-- Portable schema (SQLite and PostgreSQL): TEXT and BIGINT only, composite primary keys, no
-- auto-increment; booleans are BIGINT 0/1 and times are milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS learning_steps (
    run_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,
    step_name TEXT NOT NULL,
    command TEXT NOT NULL,
    command_key TEXT NOT NULL,
    success BIGINT NOT NULL,
    exit_code BIGINT,
    duration_ms BIGINT NOT NULL,
    signature_hash TEXT,
    signature_text TEXT,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS learning_steps_by_step ON learning_steps (repository, workflow, job, command_key, commit_sha);
CREATE TABLE IF NOT EXISTS learning_node_stats (
    command_key TEXT NOT NULL,
    repository TEXT NOT NULL,
    successes BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    PRIMARY KEY (command_key, repository)
);
CREATE TABLE IF NOT EXISTS learning_edges (
    source_key TEXT NOT NULL,
    target_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (source_key, target_key)
);
CREATE TABLE IF NOT EXISTS learning_signatures (
    command_key TEXT NOT NULL,
    signature_hash TEXT NOT NULL,
    signature_text TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (command_key, signature_hash)
);
CREATE TABLE IF NOT EXISTS learning_outcomes (
    repository TEXT NOT NULL,
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,
    command_key TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    passes BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    PRIMARY KEY (repository, workflow, job, command_key, commit_sha)
);
CREATE TABLE IF NOT EXISTS learning_lessons (
    signature_hash TEXT NOT NULL,
    repository TEXT NOT NULL,
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,
    step_name TEXT NOT NULL,
    signature_text TEXT NOT NULL,
    command_key TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    last_commit_sha TEXT NOT NULL,
    still_failing BIGINT NOT NULL,
    fixed_commit_sha TEXT,
    fixed_command_key TEXT,
    PRIMARY KEY (signature_hash, repository, workflow, job, step_name)
);
CREATE TABLE IF NOT EXISTS learning_flaky (
    repository TEXT NOT NULL,
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,
    command_key TEXT NOT NULL,
    step_name TEXT NOT NULL,
    flaky_commits BIGINT NOT NULL,
    last_commit_sha TEXT NOT NULL,
    first_detected_ms BIGINT NOT NULL,
    last_detected_ms BIGINT NOT NULL,
    PRIMARY KEY (repository, workflow, job, command_key)
);
