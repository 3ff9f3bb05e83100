-- Month-end snapshots of customers, each labelled with the revenue of the twelve months that
-- followed it: revenue_next_12m. Only what was known at :as_of is read, and only month-ends
-- whose twelve following months are all known are returned, so no label reaches past :as_of.
-- A customer who left has no bills after leaving: those months count as 0.
-- The months are numbered in order (every month has bills), so the windows below count
-- months, not rows, without date arithmetic that differs between SQLite and PostgreSQL.
WITH known AS (
    SELECT customer_id, period_end, tenure_months, plan, region, monthly_revenue,
           monthly_usage_gb, usage_change_pct, support_tickets, payment_delays
    FROM customer_revenue
    WHERE period_end <= :as_of
),
months AS (
    SELECT period_end, ROW_NUMBER() OVER (ORDER BY period_end) AS month_no
    FROM (SELECT DISTINCT period_end FROM known) AS d
),
history AS (
    SELECT k.customer_id, k.period_end, m.month_no, k.tenure_months, k.plan, k.region,
           k.monthly_revenue, k.monthly_usage_gb, k.usage_change_pct,
           -- the first of the last three bills (fewer for a newer customer): the trend
           FIRST_VALUE(k.monthly_revenue) OVER last_3m AS revenue_2m_ago,
           CAST(SUM(k.support_tickets) OVER last_3m AS BIGINT) AS support_tickets_3m,
           CAST(SUM(k.payment_delays) OVER last_3m AS BIGINT) AS payment_delays_3m,
           SUM(k.monthly_revenue) OVER (
               PARTITION BY k.customer_id ORDER BY m.month_no
               RANGE BETWEEN 1 FOLLOWING AND 12 FOLLOWING) AS revenue_next_12m
    FROM known AS k
    JOIN months AS m ON m.period_end = k.period_end
    WINDOW last_3m AS (PARTITION BY k.customer_id ORDER BY m.month_no
                       RANGE BETWEEN 2 PRECEDING AND CURRENT ROW)
)
SELECT customer_id, period_end, tenure_months, plan, region,
       monthly_revenue,
       CASE WHEN revenue_2m_ago > 0 THEN 100.0 * (monthly_revenue / revenue_2m_ago - 1.0)
            ELSE 0.0 END AS revenue_change_pct,
       monthly_usage_gb, usage_change_pct, support_tickets_3m, payment_delays_3m,
       COALESCE(revenue_next_12m, 0.0) AS revenue_next_12m
FROM history
WHERE month_no + 12 <= (SELECT MAX(month_no) FROM months)
ORDER BY customer_id, period_end
