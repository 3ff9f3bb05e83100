-- Hourly readings known at :as_of, with the region's observed temperature and the meter's attributes.
SELECT r.meter_id, r.ts, r.kwh, w.temperature, m.region, m.building
FROM meter_readings r
JOIN meters m ON m.meter_id = r.meter_id
JOIN weather w ON w.region = m.region AND w.ts = r.ts
WHERE r.ts <= :as_of
