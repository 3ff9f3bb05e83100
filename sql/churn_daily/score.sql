-- The latest snapshot at :as_of of every customer still active then.
SELECT customer_id, tenure_months, plan, region,
       monthly_usage_gb, usage_change_pct, support_tickets, payment_delays
FROM customer_months
WHERE period_end = (SELECT MAX(period_end) FROM customer_months WHERE period_end <= :as_of)
