//! A realistic hourly energy dataset: meters in four regions and three building types, each
//! with its own scale; consumption follows a daily and weekly profile per building type,
//! rises with heating and cooling demand from the region's temperature, and carries
//! autocorrelated noise. Some meters have short gaps, a long outage, start late, have too
//! little history, or stopped reporting: the cases a forecast job must handle. The `weather`
//! table holds observed temperatures and, past the as-of hour, a 48-hour forecast.

use chrono::{DateTime, Timelike, Utc};
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};

use crate::warehouse::frame::ColumnBuf;
use crate::warehouse::ident::Ident;
use crate::warehouse::ColumnType;
use crate::warehouse::{ColumnDef, Warehouse, WarehouseError, WriteMode};

const HOUR_US: i64 = 3_600_000_000;
const REGIONS: [(&str, f64); 4] = [
    ("north", 4.0),
    ("south", 14.0),
    ("east", 8.0),
    ("west", 10.0),
];
const FUTURE_HOURS: usize = 48;

/// Kinds of building, with a shape over the day and a factor for weekends.
fn profile(kind: usize, hour: u32, weekend: bool) -> f64 {
    let h = f64::from(hour);
    match kind {
        // Homes: morning and evening peaks, a bit more at weekends.
        0 => {
            let base = 0.5
                + 0.6 * (-((h - 7.5) / 1.5).powi(2)).exp()
                + 1.0 * (-((h - 19.0) / 2.5).powi(2)).exp();
            base * if weekend { 1.15 } else { 1.0 }
        }
        // Offices: working hours on weekdays only.
        1 => {
            let open = if (8.0..18.0).contains(&h) { 1.6 } else { 0.35 };
            if weekend {
                0.35
            } else {
                open
            }
        }
        // Shops: open 9 to 21 every day, busier on Saturdays.
        _ => {
            let open = if (9.0..21.0).contains(&h) { 1.3 } else { 0.3 };
            open * if weekend { 1.2 } else { 1.0 }
        }
    }
}

pub struct Generated {
    pub meters: DataFrame,
    pub readings: DataFrame,
    pub weather: DataFrame,
}

/// Generates `meters` meters with `days` of hourly history ending at the hour before `now`.
pub fn generate(meters: usize, days: usize, seed: u64, now: DateTime<Utc>) -> Generated {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .unwrap_or(now)
        .timestamp_micros()
        - HOUR_US;
    let hours = days * 24;
    let start = end - (hours as i64 - 1) * HOUR_US;

    // Weather per region: a daily cycle, a slow trend and an autocorrelated anomaly.
    let mut w_region = Vec::new();
    let mut w_ts = Vec::new();
    let mut w_temp = Vec::new();
    let mut temps: Vec<Vec<f64>> = Vec::new();
    let noise = Normal::new(0.0, 0.8).expect("valid");
    for (name, base) in REGIONS {
        let mut anomaly = 0.0;
        let mut series = Vec::with_capacity(hours + FUTURE_HOURS);
        for i in 0..hours + FUTURE_HOURS {
            let t = start + i as i64 * HOUR_US;
            let hour = ((t / HOUR_US) % 24) as f64;
            anomaly = 0.97 * anomaly + noise.sample(&mut rng);
            let daily = 4.0 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin();
            let trend = -3.0 * (i as f64 / (hours as f64));
            let actual = base + daily + trend + anomaly;
            series.push(actual);
            // Future hours are a forecast: the truth plus a growing error.
            let shown = if i >= hours {
                actual + rng.gen_range(-0.5..0.5) * (1.0 + (i - hours) as f64 / 24.0)
            } else {
                actual
            };
            w_region.push(Some(name.to_string()));
            w_ts.push(Some(t));
            w_temp.push(Some((shown * 10.0).round() / 10.0));
        }
        temps.push(series);
    }

    let mut m_id = Vec::new();
    let mut m_region = Vec::new();
    let mut m_kind = Vec::new();
    let (mut r_id, mut r_ts, mut r_kwh) = (Vec::new(), Vec::new(), Vec::new());
    let scale_dist = LogNormal::new(0.0, 0.6).expect("valid");
    let kinds = ["home", "office", "shop"];
    for m in 0..meters {
        let id = m as i64 + 1;
        let region = rng.gen_range(0..REGIONS.len());
        let kind = rng.gen_range(0..kinds.len());
        let scale = scale_dist.sample(&mut rng) * [1.0, 8.0, 5.0][kind];
        let heat = rng.gen_range(0.02..0.06);
        let cool = rng.gen_range(0.02..0.08);
        m_id.push(Some(id));
        m_region.push(Some(REGIONS[region].0.to_string()));
        m_kind.push(Some(kinds[kind].to_string()));
        // Data-quality cases, each for a few meters.
        let first = match m % 50 {
            7 => hours / 3,       // started late
            13 => hours - 24 * 5, // too little history
            _ => 0,
        };
        let last = if m % 50 == 21 { hours - 48 } else { hours }; // stopped reporting
        let outage = (m % 50 == 29).then(|| rng.gen_range(hours / 4..hours / 2));
        let mut ar = 0.0;
        for (i, &temp) in temps[region].iter().enumerate().take(last).skip(first) {
            ar = 0.8 * ar + rng.gen_range(-0.08..0.08);
            if outage.is_some_and(|o| (o..o + 10).contains(&i)) {
                continue;
            }
            if rng.gen_bool(0.004) {
                continue; // a missed reading
            }
            let t = start + i as i64 * HOUR_US;
            let secs = t / 1_000_000;
            let hour = ((secs / 3600) % 24) as u32;
            let dow = ((secs / 86_400) + 3).rem_euclid(7);
            let demand = profile(kind, hour, dow >= 5)
                + heat * (15.0 - temp).max(0.0) * 3.0
                + cool * (temp - 22.0).max(0.0) * 3.0;
            let kwh = (scale * demand * (1.0 + ar)).max(0.0);
            r_id.push(Some(id));
            r_ts.push(Some(t));
            r_kwh.push(Some((kwh * 1000.0).round() / 1000.0));
        }
    }
    let frame = |cols: Vec<(&str, ColumnBuf)>| {
        let n = cols[0].1.len();
        DataFrame::new(
            n,
            cols.into_iter()
                .map(|(name, c)| c.into_column(name))
                .collect(),
        )
        .expect("equal lengths")
    };
    Generated {
        meters: frame(vec![
            ("meter_id", ColumnBuf::Int(m_id.into())),
            ("region", ColumnBuf::Text(m_region.into())),
            ("building", ColumnBuf::Text(m_kind.into())),
        ]),
        readings: frame(vec![
            ("meter_id", ColumnBuf::Int(r_id.into())),
            ("ts", ColumnBuf::Ts(r_ts.into())),
            ("kwh", ColumnBuf::Float(r_kwh.into())),
        ]),
        weather: frame(vec![
            ("region", ColumnBuf::Text(w_region.into())),
            ("ts", ColumnBuf::Ts(w_ts.into())),
            ("temperature", ColumnBuf::Float(w_temp.into())),
        ]),
    }
}

/// Replaces the `meters`, `meter_readings` and `weather` tables. Returns the readings count.
pub async fn seed(
    wh: &Warehouse,
    meters: usize,
    days: usize,
    seed: u64,
    now: DateTime<Utc>,
) -> Result<usize, WarehouseError> {
    let g = generate(meters, days, seed, now);
    let tables: [(&str, &DataFrame, &[&str]); 3] = [
        ("meters", &g.meters, &["meter_id"]),
        ("meter_readings", &g.readings, &["meter_id", "ts"]),
        ("weather", &g.weather, &["region", "ts"]),
    ];
    for (name, df, key) in tables {
        let table = Ident::new(name).expect("valid");
        wh.execute(&format!("DROP TABLE IF EXISTS {}", table.quoted()), &[])
            .await?;
        let defs: Vec<ColumnDef> = df
            .columns()
            .iter()
            .map(|c| ColumnDef {
                name: c.name().to_string(),
                ty: match c.dtype() {
                    DataType::Int64 => ColumnType::Int,
                    DataType::Float64 => ColumnType::Float,
                    DataType::Datetime(_, _) => ColumnType::Timestamp,
                    _ => ColumnType::Text,
                },
            })
            .collect();
        wh.ensure_table(&table, &defs, key, false).await?;
        let mut tx = wh.begin().await?;
        tx.write(&table, key, df, WriteMode::Upsert).await?;
        tx.commit().await?;
    }
    Ok(g.readings.height())
}
