-- Each finished job's whole log (JSON lines, as the worker's log file holds
-- them), so that any host's dashboard and API can show it, not only the
-- host that ran the job.
CREATE TABLE job_logs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    lines TEXT NOT NULL,
    PRIMARY KEY (run_id, job)
);

-- What the learning store said about a job's failure (one hint a line),
-- kept so that every edit of the pull request comment shows it again.
ALTER TABLE jobs ADD COLUMN hints TEXT NOT NULL DEFAULT '';
