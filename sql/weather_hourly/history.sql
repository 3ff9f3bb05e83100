-- Observed hourly temperatures per station up to :as_of (the rows after it are forecasts).
SELECT region, ts, temperature
FROM weather
WHERE ts <= :as_of
