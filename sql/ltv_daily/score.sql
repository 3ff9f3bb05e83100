-- Every customer billed in the latest month known at :as_of, with the features the training
-- SQL computes, from the same windows over the last three months of bills.
WITH months AS (
    SELECT period_end, ROW_NUMBER() OVER (ORDER BY period_end) AS month_no
    FROM (SELECT DISTINCT period_end FROM customer_revenue WHERE period_end <= :as_of) AS d
),
recent AS (
    SELECT k.customer_id, k.period_end, k.tenure_months, k.plan, k.region, k.monthly_revenue,
           k.monthly_usage_gb, k.usage_change_pct, k.support_tickets, k.payment_delays,
           m.month_no
    FROM customer_revenue AS k
    JOIN months AS m ON m.period_end = k.period_end
    WHERE m.month_no >= (SELECT MAX(month_no) FROM months) - 2
),
history AS (
    SELECT customer_id, period_end, month_no, tenure_months, plan, region,
           monthly_revenue, monthly_usage_gb, usage_change_pct,
           FIRST_VALUE(monthly_revenue) OVER last_3m AS revenue_2m_ago,
           CAST(SUM(support_tickets) OVER last_3m AS BIGINT) AS support_tickets_3m,
           CAST(SUM(payment_delays) OVER last_3m AS BIGINT) AS payment_delays_3m
    FROM recent
    WINDOW last_3m AS (PARTITION BY customer_id ORDER BY month_no
                       RANGE BETWEEN 2 PRECEDING AND CURRENT ROW)
)
SELECT customer_id, tenure_months, plan, region,
       monthly_revenue,
       CASE WHEN revenue_2m_ago > 0 THEN 100.0 * (monthly_revenue / revenue_2m_ago - 1.0)
            ELSE 0.0 END AS revenue_change_pct,
       monthly_usage_gb, usage_change_pct, support_tickets_3m, payment_delays_3m
FROM history
WHERE month_no = (SELECT MAX(month_no) FROM months)
ORDER BY customer_id
