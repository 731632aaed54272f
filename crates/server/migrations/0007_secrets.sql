-- Secrets, variables and environments for runs, managed by the operators.
-- A secret's value is stored only sealed (XChaCha20-Poly1305 under a key
-- kept outside the database; its id beside it, for rotation). Scopes are
-- 'org:<owner>', 'repo:<owner/name>' or 'env:<owner/name>:<environment>',
-- lower case; names are upper case, as GitHub keeps them.
CREATE TABLE secrets (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, name)
);

CREATE TABLE variables (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, name)
);

-- An environment's protection rules: the branches and tags that may deploy
-- to it (JSON lists of name patterns; both empty: every ref) and the users
-- who must approve a job before it starts (a JSON list of logins; empty:
-- no approval).
CREATE TABLE environments (
    repository TEXT NOT NULL,
    name TEXT NOT NULL,
    branches TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    reviewers TEXT NOT NULL DEFAULT '[]',
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repository, name)
);

-- A run's request to deploy to a protected environment: waiting until a
-- reviewer approves or rejects it; one decision serves every job of the
-- run that names the environment.
CREATE TABLE approvals (
    run_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    repository TEXT NOT NULL,
    jobs TEXT NOT NULL DEFAULT '[]',
    reviewers TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    PRIMARY KEY (run_id, environment)
);
CREATE INDEX approvals_by_state ON approvals (state, repository);

-- The environment a job ran in and the URL it reported.
ALTER TABLE jobs ADD COLUMN environment TEXT;
ALTER TABLE jobs ADD COLUMN environment_url TEXT;
