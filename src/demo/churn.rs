//! A realistic churn dataset: customers observed at month ends, with tenure, plan, region,
//! usage and its change, support tickets and payment delays, and whether they churned in the
//! following month. Two latent traits (dissatisfaction, financial stress) drive both the
//! observable signals and churn, with noise, so the signal is real but imperfect and the
//! positive class is rare (about 4% of labeled rows). The latest month's label is unknown
//! (NULL): those are the rows the job scores.

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

use crate::warehouse::frame::ColumnBuf;
use crate::warehouse::ident::Ident;
use crate::warehouse::ColumnType;
use crate::warehouse::{ColumnDef, Warehouse, WarehouseError, WriteMode};

pub const TABLE: &str = "customer_months";
const PERIODS: u32 = 6;

/// Month-end snapshots: the first day of the month at 00:00 UTC, latest first at or before `now`.
pub fn period_ends(now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let first = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("valid month start");
    (0..PERIODS)
        .rev()
        .map(|k| first.checked_sub_months(Months::new(k)).expect("in range"))
        .collect()
}

/// Generates the dataset and replaces the `customer_months` table with it. Returns rows.
pub async fn seed(
    wh: &Warehouse,
    customers: usize,
    seed: u64,
    now: DateTime<Utc>,
) -> Result<usize, WarehouseError> {
    let df = generate(customers, seed, now);
    let table = Ident::new(TABLE).expect("valid");
    wh.execute(&format!("DROP TABLE IF EXISTS {}", table.quoted()), &[])
        .await?;
    let defs: Vec<ColumnDef> = COLUMNS
        .iter()
        .map(|(n, t)| ColumnDef {
            name: n.to_string(),
            ty: *t,
        })
        .collect();
    wh.ensure_table(&table, &defs, &["customer_id", "period_end"], false)
        .await?;
    let mut tx = wh.begin().await?;
    tx.write(
        &table,
        &["customer_id", "period_end"],
        &df,
        WriteMode::Upsert,
    )
    .await?;
    tx.commit().await?;
    Ok(df.height())
}

const COLUMNS: &[(&str, ColumnType)] = &[
    ("customer_id", ColumnType::Int),
    ("period_end", ColumnType::Timestamp),
    ("tenure_months", ColumnType::Int),
    ("plan", ColumnType::Text),
    ("region", ColumnType::Text),
    ("monthly_usage_gb", ColumnType::Float),
    ("usage_change_pct", ColumnType::Float),
    ("support_tickets", ColumnType::Int),
    ("payment_delays", ColumnType::Int),
    ("churned", ColumnType::Bool),
];

pub fn generate(customers: usize, seed: u64, now: DateTime<Utc>) -> DataFrame {
    let mut rng = StdRng::seed_from_u64(seed);
    let periods = period_ends(now);
    let cap = customers * PERIODS as usize;
    let (mut ids, mut times, mut tenures) = (
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
    );
    let (mut plans, mut region_col) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
    let (mut usages, mut changes) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
    let (mut ticket_col, mut delay_col, mut labels) = (
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
    );
    let noise = Normal::new(0.0, 0.4).expect("valid");
    let usage_noise = LogNormal::new(0.0, 0.25).expect("valid");
    let regions = ["north", "south", "east", "west"];
    for id in 0..customers {
        let plan_draw: f64 = rng.gen();
        let (plan, plan_effect, usage_mean) = if plan_draw < 0.5 {
            ("basic", 0.5, 20.0)
        } else if plan_draw < 0.85 {
            ("standard", 0.0, 60.0)
        } else {
            ("premium", -0.5, 150.0)
        };
        let region = regions[rng.gen_range(0..regions.len())];
        let region_effect = if region == "south" { 0.25 } else { 0.0 };
        let dissatisfied = rng.gen_bool(0.12);
        let stressed = rng.gen_bool(0.08);
        let tenure0: i64 = rng.gen_range(1..72);
        let base_usage: f64 =
            usage_mean * LogNormal::new(0.0, 0.5).expect("valid").sample(&mut rng);
        let trend: f64 = if dissatisfied {
            -0.12
        } else {
            rng.gen_range(-0.03..0.04)
        };
        let mut last_usage = base_usage;
        for (p, period) in periods.iter().enumerate() {
            let tenure = tenure0 + p as i64;
            let usage = (last_usage * (1.0 + trend) * usage_noise.sample(&mut rng)).max(0.1);
            let change = 100.0 * (usage / last_usage - 1.0);
            let tickets = Poisson::new(0.3 + if dissatisfied { 1.6 } else { 0.0 })
                .expect("valid")
                .sample(&mut rng) as i64;
            let delays = Poisson::new(0.12 + if stressed { 1.1 } else { 0.0 })
                .expect("valid")
                .sample(&mut rng) as i64;
            let logit = -3.4 + 1.1 * delays as f64 + 0.6 * tickets as f64 - 0.035 * tenure as f64
                + plan_effect
                + region_effect
                - 0.02 * change
                + if dissatisfied { 0.8 } else { 0.0 }
                + noise.sample(&mut rng);
            let churns = rng.gen::<f64>() < 1.0 / (1.0 + (-logit).exp());
            let latest = p + 1 == periods.len();
            ids.push(Some(id as i64 + 1));
            times.push(Some(period.timestamp_micros()));
            tenures.push(Some(tenure));
            plans.push(Some(plan.to_string()));
            region_col.push(Some(region.to_string()));
            usages.push(Some((usage * 10.0).round() / 10.0));
            changes.push(Some((change * 10.0).round() / 10.0));
            ticket_col.push(Some(tickets));
            delay_col.push(Some(delays));
            labels.push(if latest { None } else { Some(churns) });
            if churns && !latest {
                break;
            }
            last_usage = usage;
        }
    }
    let n = ids.len();
    let cols = [
        ColumnBuf::Int(ids.into()),
        ColumnBuf::Ts(times.into()),
        ColumnBuf::Int(tenures.into()),
        ColumnBuf::Text(plans.into()),
        ColumnBuf::Text(region_col.into()),
        ColumnBuf::Float(usages.into()),
        ColumnBuf::Float(changes.into()),
        ColumnBuf::Int(ticket_col.into()),
        ColumnBuf::Int(delay_col.into()),
        ColumnBuf::Bool(labels.into()),
    ];
    DataFrame::new(
        n,
        cols.into_iter()
            .zip(COLUMNS)
            .map(|(c, (name, _))| c.into_column(name))
            .collect(),
    )
    .expect("columns have equal length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_a_rare_positive_class() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0).unwrap();
        let a = generate(2000, 7, now);
        let b = generate(2000, 7, now);
        assert!(a.equals_missing(&b));
        let churned = a.column("churned").unwrap().bool().unwrap();
        let labeled = churned.len() - churned.null_count();
        let positive = churned.sum().unwrap_or(0) as usize;
        let rate = positive as f64 / labeled as f64;
        assert!((0.01..0.12).contains(&rate), "churn rate {rate}");
        assert_eq!(
            period_ends(now).last().unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
    }
}
