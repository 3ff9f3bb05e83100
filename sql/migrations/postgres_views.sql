-- Views for dashboards (sql/roles.sql lets prescore_reader read them): the latest run of each
-- job and shard, each job's champion, and realized accuracy by lead time next to seasonal
-- naive (weighted by the forecasts each day's figures cover).
CREATE OR REPLACE VIEW prescore_latest_runs AS
SELECT r.job, r.shard, r.run_id, r.command, r.as_of, r.status, r.started_at, r.finished_at,
       r.rows_read, r.rows_scored, r.rows_written, r.model_version, r.error
FROM prescore_runs r
WHERE r.started_at = (SELECT MAX(x.started_at) FROM prescore_runs x
                      WHERE x.job = r.job AND x.shard = r.shard);
CREATE OR REPLACE VIEW prescore_champions AS
SELECT job, version, algorithm, task, trained_at, as_of, rows_train, rows_holdout, metrics,
       status_changed_at AS promoted_at, status_reason AS promoted_because
FROM prescore_models
WHERE status = 'champion';
CREATE OR REPLACE VIEW prescore_accuracy_by_lead AS
SELECT job, horizon,
       SUM(n) AS n,
       SUM(mae * n) / NULLIF(SUM(CASE WHEN mae IS NULL THEN 0 ELSE n END), 0) AS mae,
       SUM(bias * n) / NULLIF(SUM(CASE WHEN bias IS NULL THEN 0 ELSE n END), 0) AS bias,
       SUM(coverage * n) / NULLIF(SUM(CASE WHEN coverage IS NULL THEN 0 ELSE n END), 0) AS coverage,
       SUM(naive_mae * naive_n) / NULLIF(SUM(CASE WHEN naive_mae IS NULL THEN 0 ELSE naive_n END), 0) AS naive_mae,
       MIN(day) AS first_day, MAX(day) AS last_day
FROM prescore_accuracy
GROUP BY job, horizon;

-- What each table and view holds, for the catalogue a BI tool shows (no semicolons inside).
COMMENT ON TABLE prescore_runs IS 'One row per prescore run: job, shard, command, as-of time, final status, rows read, scored and written, seconds per stage, error text';
COMMENT ON COLUMN prescore_runs.as_of IS 'The time the job SQL was bound to (data known then)';
COMMENT ON COLUMN prescore_runs.status IS 'running, succeeded, failed, gated or abandoned';
COMMENT ON TABLE prescore_models IS 'The model registry: every trained model with its holdout or backtest metrics, the baseline metrics and its status (candidate, champion, retired, rejected)';
COMMENT ON TABLE prescore_model_events IS 'Append-only model history: trained, rejected, promoted, rolled_back, retired, with the run and the command';
COMMENT ON TABLE prescore_accuracy IS 'Realized accuracy of issued forecasts per job, model version, method, lead time and target day, with seasonal naive on the same targets';
COMMENT ON COLUMN prescore_accuracy.horizon IS 'Lead time: steps ahead of the forecast origin';
COMMENT ON COLUMN prescore_accuracy.bias IS 'Mean of forecast minus actual (positive: over-forecast)';
COMMENT ON COLUMN prescore_accuracy.coverage IS 'Share of actuals inside the prediction interval';
COMMENT ON COLUMN prescore_accuracy.naive_mae IS 'MAE of seasonal naive on the same targets, NULL when its value was unknown';
COMMENT ON TABLE prescore_label_accuracy IS 'Realized accuracy of issued scores against the labels that arrived later, per job, model version and issue day: AUC, log loss, Brier score, positive rate (classification) or MAE, RMSE, bias (regression)';
COMMENT ON COLUMN prescore_label_accuracy.day IS 'Midnight UTC of the day the scores were issued (their as_of)';
COMMENT ON COLUMN prescore_label_accuracy.n IS 'Issued scores with a label';
COMMENT ON TABLE prescore_calibration IS 'Calibration of issued scores per job, model version and issue day: for each score decile, the mean score and the mean label (observed positive rate)';
COMMENT ON COLUMN prescore_calibration.decile IS 'Score decile, 1 (lowest scores) to 10, as NTILE(10) over the scores';
COMMENT ON TABLE prescore_drift IS 'PSI of each feature and of the scores of a run against the training data of its model';
COMMENT ON VIEW prescore_latest_runs IS 'The latest run of each job and shard';
COMMENT ON VIEW prescore_champions IS 'The model each job serves now';
COMMENT ON VIEW prescore_accuracy_by_lead IS 'Realized MAE, bias and coverage per job and lead time over every evaluated day, next to seasonal naive'
