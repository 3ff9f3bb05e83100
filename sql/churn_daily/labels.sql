-- The labels of the customers scored as of :as_of (the time the scores were issued): whether
-- each one churned in the month after the snapshot that was scored then. NULL until that
-- month has ended, and such rows count as "no label yet".
SELECT customer_id, churned
FROM customer_months
WHERE period_end = (SELECT MAX(period_end) FROM customer_months WHERE period_end <= :as_of)
