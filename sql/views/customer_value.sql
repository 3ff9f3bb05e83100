-- customer_value: what each current customer is worth, for the retention team to sort by.
-- One row per customer scored by both churn_daily (churn_scores) and ltv_daily (ltv_scores).
-- ltv_daily writes with "replace", so this is exactly the customers billed in its latest run.
--
--   churn_probability  the probability the customer leaves next month
--   ltv                the revenue expected in the next 12 months (ltv_lo..ltv_hi: its 80% interval)
--   expected_value     ltv * (1 - churn_probability)
--   value_at_risk      ltv * churn_probability: the revenue a churn would lose
--
-- The same file works on SQLite and PostgreSQL. `prescore demo` creates the view. Elsewhere,
-- create it once after both jobs have run, as the job's role (on PostgreSQL the reader role
-- may then read it, by the default privileges sql/roles.sql sets up):
--   sqlite3 prescore.db < sql/views/customer_value.sql
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/views/customer_value.sql
-- A view always shows the tables' current rows: nothing to refresh after a run.

DROP VIEW IF EXISTS customer_value;

CREATE VIEW customer_value AS
SELECT c.customer_id,
       c.score AS churn_probability,
       l.score AS ltv,
       l.score_lo AS ltv_lo,
       l.score_hi AS ltv_hi,
       l.score * (1.0 - c.score) AS expected_value,
       l.score * c.score AS value_at_risk,
       c.model_version AS churn_model_version,
       l.model_version AS ltv_model_version
FROM churn_scores AS c
JOIN ltv_scores AS l ON l.customer_id = c.customer_id;
