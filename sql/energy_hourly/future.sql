-- The temperature forecast for every meter's region, for the hours after :as_of.
SELECT m.meter_id, w.ts, w.temperature
FROM meters m
JOIN weather w ON w.region = m.region
WHERE w.ts > :as_of
