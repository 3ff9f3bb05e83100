-- Labeled monthly snapshots known at :as_of (the latest month has no label yet).
SELECT customer_id, period_end, tenure_months, plan, region,
       monthly_usage_gb, usage_change_pct, support_tickets, payment_delays, churned
FROM customer_months
WHERE churned IS NOT NULL
  AND period_end <= :as_of
