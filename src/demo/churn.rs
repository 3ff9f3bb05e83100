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
    month_starts(now, PERIODS)
}

/// The first days of the `n` months ending with the month of `now` (00:00 UTC), oldest first.
pub fn month_starts(now: DateTime<Utc>, n: u32) -> Vec<DateTime<Utc>> {
    let first = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("valid month start");
    (0..n)
        .rev()
        .map(|k| first.checked_sub_months(Months::new(k)).expect("in range"))
        .collect()
}

/// Generates the dataset and replaces the `customer_months` table with it. Returns the frame
/// and each customer's profile (what the revenue history is built on).
pub async fn seed(
    wh: &Warehouse,
    customers: usize,
    seed: u64,
    now: DateTime<Utc>,
) -> Result<(DataFrame, Vec<Profile>), WarehouseError> {
    let (df, profiles) = simulate(customers, seed, now, true);
    replace_table(wh, TABLE, COLUMNS, &df).await?;
    Ok((df, profiles))
}

/// Drops `name` and creates it again with `columns`, keyed by customer and month, holding `df`.
pub(super) async fn replace_table(
    wh: &Warehouse,
    name: &str,
    columns: &[(&str, ColumnType)],
    df: &DataFrame,
) -> Result<(), WarehouseError> {
    let table = Ident::new(name).expect("valid");
    wh.execute(&format!("DROP TABLE IF EXISTS {}", table.quoted()), &[])
        .await?;
    let defs: Vec<ColumnDef> = columns
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
        df,
        WriteMode::Upsert,
    )
    .await?;
    tx.commit().await
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

/// A customer's plan and region, and the hidden traits that drive what they do and whether
/// they leave.
#[derive(Debug, Clone)]
pub struct Profile {
    pub plan: &'static str,
    plan_effect: f64,
    pub region: &'static str,
    region_effect: f64,
    pub dissatisfied: bool,
    pub stressed: bool,
    /// Months of tenure at the first snapshot.
    pub tenure0: i64,
    /// Usage in the month before the first snapshot.
    pub base_usage: f64,
    /// Usage change per month.
    pub trend: f64,
}

/// One month of a customer: what it shows and whether the customer leaves in the next one.
#[derive(Debug, Clone, Copy)]
pub struct Month {
    pub usage: f64,
    pub change_pct: f64,
    pub tickets: i64,
    pub delays: i64,
    pub churns: bool,
}

/// The month-to-month noise every customer draws from.
pub struct Noise {
    logit: Normal<f64>,
    usage: LogNormal<f64>,
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            logit: Normal::new(0.0, 0.4).expect("valid"),
            usage: LogNormal::new(0.0, 0.25).expect("valid"),
        }
    }
}

const REGIONS: [&str; 4] = ["north", "south", "east", "west"];

impl Profile {
    /// Draws a customer.
    pub fn draw(rng: &mut StdRng) -> Profile {
        let plan_draw: f64 = rng.gen();
        let (plan, plan_effect, usage_mean) = if plan_draw < 0.5 {
            ("basic", 0.5, 20.0)
        } else if plan_draw < 0.85 {
            ("standard", 0.0, 60.0)
        } else {
            ("premium", -0.5, 150.0)
        };
        let region = REGIONS[rng.gen_range(0..REGIONS.len())];
        let region_effect = if region == "south" { 0.25 } else { 0.0 };
        let dissatisfied = rng.gen_bool(0.12);
        let stressed = rng.gen_bool(0.08);
        let tenure0: i64 = rng.gen_range(1..72);
        let base_usage: f64 = usage_mean * LogNormal::new(0.0, 0.5).expect("valid").sample(rng);
        let trend: f64 = if dissatisfied {
            -0.12
        } else {
            rng.gen_range(-0.03..0.04)
        };
        Profile {
            plan,
            plan_effect,
            region,
            region_effect,
            dissatisfied,
            stressed,
            tenure0,
            base_usage,
            trend,
        }
    }

    /// The month after one with `last_usage`, at `tenure` months.
    pub fn month(&self, tenure: i64, last_usage: f64, noise: &Noise, rng: &mut StdRng) -> Month {
        let usage = (last_usage * (1.0 + self.trend) * noise.usage.sample(rng)).max(0.1);
        let change = 100.0 * (usage / last_usage - 1.0);
        let tickets = Poisson::new(0.3 + if self.dissatisfied { 1.6 } else { 0.0 })
            .expect("valid")
            .sample(rng) as i64;
        let delays = Poisson::new(0.12 + if self.stressed { 1.1 } else { 0.0 })
            .expect("valid")
            .sample(rng) as i64;
        let logit = -3.4 + 1.1 * delays as f64 + 0.6 * tickets as f64 - 0.035 * tenure as f64
            + self.plan_effect
            + self.region_effect
            - 0.02 * change
            + if self.dissatisfied { 0.8 } else { 0.0 }
            + noise.logit.sample(rng);
        let churns = rng.gen::<f64>() < 1.0 / (1.0 + (-logit).exp());
        Month {
            usage,
            change_pct: change,
            tickets,
            delays,
            churns,
        }
    }
}

pub fn generate(customers: usize, seed: u64, now: DateTime<Utc>) -> DataFrame {
    simulate(customers, seed, now, false).0
}

/// The snapshots, and every customer's profile when `keep_profiles`.
pub(super) fn simulate(
    customers: usize,
    seed: u64,
    now: DateTime<Utc>,
    keep_profiles: bool,
) -> (DataFrame, Vec<Profile>) {
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
    let noise = Noise::default();
    let mut profiles = Vec::with_capacity(if keep_profiles { customers } else { 0 });
    for id in 0..customers {
        let profile = Profile::draw(&mut rng);
        let mut last_usage = profile.base_usage;
        for (p, period) in periods.iter().enumerate() {
            let tenure = profile.tenure0 + p as i64;
            let m = profile.month(tenure, last_usage, &noise, &mut rng);
            let latest = p + 1 == periods.len();
            ids.push(Some(id as i64 + 1));
            times.push(Some(period.timestamp_micros()));
            tenures.push(Some(tenure));
            plans.push(Some(profile.plan.to_string()));
            region_col.push(Some(profile.region.to_string()));
            usages.push(Some((m.usage * 10.0).round() / 10.0));
            changes.push(Some((m.change_pct * 10.0).round() / 10.0));
            ticket_col.push(Some(m.tickets));
            delay_col.push(Some(m.delays));
            labels.push(if latest { None } else { Some(m.churns) });
            if m.churns && !latest {
                break;
            }
            last_usage = m.usage;
        }
        if keep_profiles {
            profiles.push(profile);
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
    let df = DataFrame::new(
        n,
        cols.into_iter()
            .zip(COLUMNS)
            .map(|(c, (name, _))| c.into_column(name))
            .collect(),
    )
    .expect("columns have equal length");
    (df, profiles)
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
