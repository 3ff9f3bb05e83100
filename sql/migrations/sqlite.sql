-- prescore's own tables on SQLite. Idempotent: applied by `prescore init` and by every run.
-- Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS', JSON columns are text.

CREATE TABLE IF NOT EXISTS prescore_runs (
    run_id        TEXT PRIMARY KEY,
    job           TEXT NOT NULL,
    shard         TEXT NOT NULL,
    command       TEXT NOT NULL,
    as_of         TEXT NOT NULL,
    status        TEXT NOT NULL,  -- running, succeeded, failed, gated, skipped, abandoned
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    rows_read     INTEGER,
    rows_scored   INTEGER,
    rows_written  INTEGER,
    model_version INTEGER,
    stage_seconds TEXT,           -- JSON: {"read": 0.12, ...}
    error         TEXT,
    holder        TEXT NOT NULL   -- host:pid
);
CREATE INDEX IF NOT EXISTS prescore_runs_job ON prescore_runs (job, started_at);

-- Which logical run each run belongs to: the shards of one scheduled run share a group (the
-- as-of time unless the orchestrator names it), which `prescore status` checks as a whole.
CREATE TABLE IF NOT EXISTS prescore_run_groups (
    run_id      TEXT PRIMARY KEY,
    job         TEXT NOT NULL,
    run_group   TEXT NOT NULL,
    shard_index INTEGER NOT NULL,
    shard_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS prescore_run_groups_group ON prescore_run_groups (job, run_group);

CREATE TABLE IF NOT EXISTS prescore_models (
    job               TEXT NOT NULL,
    version           INTEGER NOT NULL,
    algorithm         TEXT NOT NULL,
    task              TEXT NOT NULL,
    params            TEXT NOT NULL,
    features          TEXT NOT NULL,  -- JSON: the feature schema, in column order
    feature_hash      TEXT NOT NULL,
    trained_at        TEXT NOT NULL,
    as_of             TEXT NOT NULL,
    train_from        TEXT,
    train_to          TEXT,
    rows_train        INTEGER NOT NULL,
    rows_holdout      INTEGER NOT NULL,
    metrics           TEXT NOT NULL,  -- JSON: holdout metrics of the model
    baseline          TEXT NOT NULL,  -- JSON: the same metrics of the naive baseline
    importances       TEXT,
    artifact          BLOB NOT NULL,  -- the serialized model
    status            TEXT NOT NULL,  -- candidate, champion, retired, rejected
    status_reason     TEXT,
    status_changed_at TEXT NOT NULL,
    run_id            TEXT,
    PRIMARY KEY (job, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS prescore_models_one_champion
    ON prescore_models (job) WHERE status = 'champion';

-- The model history, append-only: one row per registry change, written in the transaction
-- that makes the change. `models rollback` replays it to find the model that served before.
CREATE TABLE IF NOT EXISTS prescore_model_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job     TEXT NOT NULL,
    version INTEGER NOT NULL,
    event   TEXT NOT NULL,  -- trained, rejected, promoted, rolled_back, retired
    run_id  TEXT,           -- the run that made the change (none for a change by hand)
    reason  TEXT,
    at      TEXT NOT NULL,
    command TEXT NOT NULL   -- run, train, score, models promote, models rollback
);
CREATE INDEX IF NOT EXISTS prescore_model_events_job ON prescore_model_events (job, version);

CREATE TABLE IF NOT EXISTS prescore_metrics (
    run_id TEXT NOT NULL,
    job    TEXT NOT NULL,
    name   TEXT NOT NULL,
    labels TEXT NOT NULL,  -- e.g. 'horizon=3' or ''
    value  REAL,
    PRIMARY KEY (run_id, name, labels)
);

-- Realized accuracy of forecast jobs: the issued forecasts (<table>_history) joined with the
-- actuals that arrived, per model version, method, lead time and target day (UTC). A run, or
-- `prescore evaluate`, replaces the rows of the days it evaluates.
CREATE TABLE IF NOT EXISTS prescore_accuracy (
    job           TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    method        TEXT NOT NULL,
    horizon       BIGINT NOT NULL,  -- steps ahead (lead time)
    day           TEXT NOT NULL,  -- midnight UTC of the target's day
    n             BIGINT NOT NULL,  -- forecasts with an actual
    mae           REAL,
    rmse          REAL,
    bias          REAL,  -- mean of yhat - actual
    coverage      REAL,  -- share of actuals in [yhat_lo, yhat_hi]
    naive_n       BIGINT NOT NULL,  -- of those, how many have the seasonal-naive actual
    naive_mae     REAL,  -- seasonal naive (one season back, as issued at the same origin), NULL when none
    evaluated_at  TEXT NOT NULL,
    PRIMARY KEY (job, model_version, method, horizon, day)
);

-- Realized accuracy of score jobs: the issued scores (<table>_history) joined by key with the
-- labels that arrived for the entities scored at each issue time (input.labels_sql), per model
-- version and issue day (UTC). A run, or `prescore evaluate`, replaces the rows of the days it
-- evaluates that have labels.
CREATE TABLE IF NOT EXISTS prescore_label_accuracy (
    job           TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    day           TEXT NOT NULL,  -- midnight UTC of the day the scores were issued (their as_of)
    n             BIGINT NOT NULL,  -- issued scores with a label
    mean_score    REAL,
    positive_rate REAL,  -- classification: share of positive labels
    auc           REAL,  -- classification
    log_loss      REAL,  -- classification
    brier         REAL,  -- classification: mean of (score - label)^2
    mae           REAL,  -- regression
    rmse          REAL,  -- regression
    bias          REAL,  -- regression: mean of score - actual
    evaluated_at  TEXT NOT NULL,
    PRIMARY KEY (job, model_version, day)
);

-- Calibration of the same scores: ten groups by score (NTILE(10), lowest first), each with its
-- mean score and the mean label (the observed positive rate, or for regression the mean actual).
CREATE TABLE IF NOT EXISTS prescore_calibration (
    job           TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    day           TEXT NOT NULL,
    decile        BIGINT NOT NULL,  -- 1 (lowest scores) to 10
    n             BIGINT NOT NULL,
    mean_score    REAL,
    mean_label    REAL,
    PRIMARY KEY (job, model_version, day, decile)
);

-- Drift of each published run against its model's training data: the population stability
-- index per feature (and `score`, the score distribution), written in the publish transaction.
CREATE TABLE IF NOT EXISTS prescore_drift (
    run_id        TEXT NOT NULL,
    job           TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    feature       TEXT NOT NULL,
    psi           REAL NOT NULL,
    at            TEXT NOT NULL,
    PRIMARY KEY (run_id, feature)
);

-- The job lock's lease (see src/warehouse/lease.rs): who holds the job, until when unless a
-- heartbeat renews it, and the fencing token every takeover increments.
CREATE TABLE IF NOT EXISTS prescore_leases (
    job         TEXT NOT NULL,
    shard       TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (job, shard)
);

-- The version of this script (its hash) once it ran: a current schema skips the DDL above.
CREATE TABLE IF NOT EXISTS prescore_schema (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version TEXT NOT NULL
);
