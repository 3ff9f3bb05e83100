-- Views for dashboards (sql/roles.sql lets prescore_reader read them): the latest run of each
-- job and shard, each job's champion, and realized accuracy by lead time next to seasonal
-- naive (weighted by the forecasts each day's figures cover).
DROP VIEW IF EXISTS prescore_latest_runs;
CREATE VIEW prescore_latest_runs AS
SELECT r.job, r.shard, r.run_id, r.command, r.as_of, r.status, r.started_at, r.finished_at,
       r.rows_read, r.rows_scored, r.rows_written, r.model_version, r.error
FROM prescore_runs r
WHERE r.started_at = (SELECT MAX(x.started_at) FROM prescore_runs x
                      WHERE x.job = r.job AND x.shard = r.shard);
DROP VIEW IF EXISTS prescore_champions;
CREATE VIEW prescore_champions AS
SELECT job, version, algorithm, task, trained_at, as_of, rows_train, rows_holdout, metrics,
       status_changed_at AS promoted_at, status_reason AS promoted_because
FROM prescore_models
WHERE status = 'champion';
DROP VIEW IF EXISTS prescore_accuracy_by_lead;
CREATE VIEW prescore_accuracy_by_lead AS
SELECT job, horizon,
       SUM(n) AS n,
       SUM(mae * n) / NULLIF(SUM(CASE WHEN mae IS NULL THEN 0 ELSE n END), 0) AS mae,
       SUM(bias * n) / NULLIF(SUM(CASE WHEN bias IS NULL THEN 0 ELSE n END), 0) AS bias,
       SUM(coverage * n) / NULLIF(SUM(CASE WHEN coverage IS NULL THEN 0 ELSE n END), 0) AS coverage,
       SUM(naive_mae * naive_n) / NULLIF(SUM(CASE WHEN naive_mae IS NULL THEN 0 ELSE naive_n END), 0) AS naive_mae,
       MIN(day) AS first_day, MAX(day) AS last_day
FROM prescore_accuracy
GROUP BY job, horizon
