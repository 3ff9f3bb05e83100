//! Two years of monthly billing for the churn demo's customers (`customer_revenue`): one row
//! per customer and month billed, with the month's activity (tenure, plan, region, usage and
//! its change, support tickets, payment delays) and its revenue. The last six months are the
//! churn snapshots (`customer_months`) row for row, with revenue added: a customer who churned
//! there has no bill after the month they left in. The eighteen months before hold the same
//! customers' earlier months and the former customers who left before the snapshots began,
//! drawn from the same churn process, so that the training months of an LTV model see churn
//! as the business did.
//!
//! Revenue is a plan fee scaled by the account's size (lognormal: many small accounts and a
//! long tail of large ones), drifting with the account's growth (dissatisfied customers shrink
//! theirs), plus usage beyond the plan's allowance. It is drawn from its own random stream, so
//! the churn snapshots are the same with or without it.

use chrono::{DateTime, Utc};
use polars::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal, Poisson};

use super::churn::{self, Noise, Profile};
use crate::warehouse::frame::ColumnBuf;
use crate::warehouse::{ColumnType, Warehouse, WarehouseError};

pub const TABLE: &str = "customer_revenue";
/// Months of billing history, ending with the latest churn snapshot.
pub const MONTHS: u32 = 24;
/// Months before the churn snapshots begin.
const BEFORE: i64 = MONTHS as i64 - 6;
/// Former customers: candidates drawn per current customer (those who did not leave before the
/// snapshots began are dropped, since the snapshots hold everyone who was still a customer).
const FORMER_CANDIDATES: f64 = 3.5;
/// Candidates join up to this many months before the history begins.
const JOIN_WINDOW: i64 = 48;
/// Mixed into the seed, so that revenue draws from a stream of its own ("REVENUE" in ASCII).
const STREAM: u64 = 0x0052_4556_454e_5545;

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
    ("monthly_revenue", ColumnType::Float),
];

/// Generates the billing history of the churn snapshots `churn` (with their `profiles`, from
/// [`churn::seed`]) and replaces the `customer_revenue` table with it. Returns rows.
pub async fn seed(
    wh: &Warehouse,
    churn: &DataFrame,
    profiles: &[Profile],
    seed: u64,
    now: DateTime<Utc>,
) -> Result<usize, WarehouseError> {
    let df = generate(churn, profiles, seed, now);
    churn::replace_table(wh, TABLE, COLUMNS, &df).await?;
    Ok(df.height())
}

/// A plan's price: a monthly fee per unit of account size, and usage beyond the allowance.
fn price(plan: &str) -> (f64, f64, f64) {
    match plan {
        "basic" => (15.0, 20.0, 0.25),
        "standard" => (39.0, 60.0, 0.15),
        _ => (99.0, 150.0, 0.10),
    }
}

/// An account's size: where it starts and how it drifts from month to month.
struct Account {
    size: f64,
    drift: f64,
    wobble: LogNormal<f64>,
}

impl Account {
    fn draw(rng: &mut StdRng) -> Account {
        Account {
            size: LogNormal::new(0.0, 0.9).expect("valid").sample(rng),
            drift: Normal::new(0.004, 0.01).expect("valid").sample(rng),
            wobble: LogNormal::new(0.0, 0.03).expect("valid"),
        }
    }

    /// This month's bill; the account then moves on to the next month (shrinking when the
    /// customer is `shrinking`).
    fn bill(&mut self, plan: &str, usage: f64, shrinking: bool, rng: &mut StdRng) -> f64 {
        let (fee, allowance, per_gb) = price(plan);
        let bill = (self.size * fee + per_gb * (usage - allowance).max(0.0)).max(1.0);
        let drift = if shrinking { -0.04 } else { self.drift };
        self.size *= (1.0 + drift) * self.wobble.sample(rng);
        (bill * 100.0).round() / 100.0
    }
}

/// The table's columns, filled row by row.
#[derive(Default)]
struct Rows {
    id: Vec<Option<i64>>,
    month: Vec<usize>,
    tenure: Vec<Option<i64>>,
    plan: Vec<Option<String>>,
    region: Vec<Option<String>>,
    usage: Vec<Option<f64>>,
    change: Vec<Option<f64>>,
    tickets: Vec<Option<i64>>,
    delays: Vec<Option<i64>>,
    revenue: Vec<Option<f64>>,
}

/// One billed month of one customer.
struct Bill<'a> {
    id: i64,
    month: usize,
    tenure: i64,
    profile: &'a Profile,
    usage: f64,
    change_pct: f64,
    tickets: i64,
    delays: i64,
    revenue: f64,
}

impl Rows {
    fn push(&mut self, b: Bill<'_>) {
        self.id.push(Some(b.id));
        self.month.push(b.month);
        self.tenure.push(Some(b.tenure));
        self.plan.push(Some(b.profile.plan.to_string()));
        self.region.push(Some(b.profile.region.to_string()));
        self.usage.push(Some((b.usage * 10.0).round() / 10.0));
        self.change.push(Some((b.change_pct * 10.0).round() / 10.0));
        self.tickets.push(Some(b.tickets));
        self.delays.push(Some(b.delays));
        self.revenue.push(Some(b.revenue));
    }

    fn truncate(&mut self, n: usize) {
        self.id.truncate(n);
        self.month.truncate(n);
        self.tenure.truncate(n);
        self.plan.truncate(n);
        self.region.truncate(n);
        self.usage.truncate(n);
        self.change.truncate(n);
        self.tickets.truncate(n);
        self.delays.truncate(n);
        self.revenue.truncate(n);
    }
}

/// The snapshots' columns this history repeats, by row.
struct Snapshots<'a> {
    id: &'a Int64Chunked,
    tenure: &'a Int64Chunked,
    usage: &'a Float64Chunked,
    change: &'a Float64Chunked,
    tickets: &'a Int64Chunked,
    delays: &'a Int64Chunked,
}

impl<'a> Snapshots<'a> {
    fn of(df: &'a DataFrame) -> Snapshots<'a> {
        let int = |n: &str| df.column(n).and_then(|c| c.i64()).expect("an int column");
        let float = |n: &str| df.column(n).and_then(|c| c.f64()).expect("a float column");
        Snapshots {
            id: int("customer_id"),
            tenure: int("tenure_months"),
            usage: float("monthly_usage_gb"),
            change: float("usage_change_pct"),
            tickets: int("support_tickets"),
            delays: int("payment_delays"),
        }
    }
}

/// The billing history of the churn snapshots `churn` and their customers' `profiles`.
pub fn generate(
    churn: &DataFrame,
    profiles: &[Profile],
    seed: u64,
    now: DateTime<Utc>,
) -> DataFrame {
    let mut rng = StdRng::seed_from_u64(seed ^ STREAM);
    let months = churn::month_starts(now, MONTHS);
    let snap = Snapshots::of(churn);
    let mut rows = Rows::default();
    let usage_noise = LogNormal::new(0.0, 0.15).expect("valid");
    let mut cursor = 0;
    for (i, profile) in profiles.iter().enumerate() {
        let id = i as i64 + 1;
        // Earlier months of a current customer: they stayed, with their usage walking back
        // from where the snapshots start and no trouble yet (dissatisfaction and stress are
        // what the snapshots show now).
        let growth: f64 = rng.gen_range(-0.02..0.03);
        let mut account = Account::draw(&mut rng);
        let first = (BEFORE + 1 - profile.tenure0).max(0);
        let earlier = (BEFORE - first) as usize;
        // Usage of the month before the snapshots is the profile's base usage.
        let mut usage = vec![profile.base_usage; earlier];
        for k in (0..earlier.saturating_sub(1)).rev() {
            usage[k] = (usage[k + 1] / ((1.0 + growth) * usage_noise.sample(&mut rng))).max(0.1);
        }
        let mut before = usage.first().copied().unwrap_or(profile.base_usage)
            / ((1.0 + growth) * usage_noise.sample(&mut rng));
        for (k, &u) in usage.iter().enumerate() {
            let month = first + k as i64;
            let tickets = Poisson::new(0.3).expect("valid").sample(&mut rng) as i64;
            let delays = Poisson::new(0.12).expect("valid").sample(&mut rng) as i64;
            let revenue = account.bill(profile.plan, u, false, &mut rng);
            rows.push(Bill {
                id,
                month: month as usize,
                tenure: profile.tenure0 - (BEFORE - month),
                profile,
                usage: u,
                change_pct: 100.0 * (u / before - 1.0),
                tickets,
                delays,
                revenue,
            });
            before = u;
        }
        // The snapshot months, as the churn data has them.
        let mut month = BEFORE as usize;
        while cursor < snap.id.len() && snap.id.get(cursor) == Some(id) {
            let usage = snap.usage.get(cursor).unwrap_or_default();
            let revenue = account.bill(profile.plan, usage, profile.dissatisfied, &mut rng);
            rows.push(Bill {
                id,
                month,
                tenure: snap.tenure.get(cursor).unwrap_or_default(),
                profile,
                usage,
                change_pct: snap.change.get(cursor).unwrap_or_default(),
                tickets: snap.tickets.get(cursor).unwrap_or_default(),
                delays: snap.delays.get(cursor).unwrap_or_default(),
                revenue,
            });
            cursor += 1;
            month += 1;
        }
    }
    former_customers(&mut rows, profiles.len(), &mut rng);
    frame(rows, &months)
}

/// Customers who left before the snapshots began: drawn like the current ones, joining over
/// the years before, living month by month through the churn process, and kept only when they
/// left within the history (before it they never show; after it they would be current).
fn former_customers(rows: &mut Rows, current: usize, rng: &mut StdRng) {
    let noise = Noise::default();
    let candidates = (current as f64 * FORMER_CANDIDATES) as usize;
    let mut id = current as i64;
    for _ in 0..candidates {
        let profile = Profile::draw(rng);
        let mut account = Account::draw(rng);
        let join = rng.gen_range(-JOIN_WINDOW..BEFORE);
        let start = rows.id.len();
        let mut last_usage = profile.base_usage;
        let mut left = None;
        for month in join..BEFORE {
            let m = profile.month(month - join + 1, last_usage, &noise, rng);
            let revenue = account.bill(profile.plan, m.usage, profile.dissatisfied, rng);
            if month >= 0 {
                rows.push(Bill {
                    id: id + 1,
                    month: month as usize,
                    tenure: month - join + 1,
                    profile: &profile,
                    usage: m.usage,
                    change_pct: m.change_pct,
                    tickets: m.tickets,
                    delays: m.delays,
                    revenue,
                });
            }
            if m.churns {
                left = Some(month);
                break;
            }
            last_usage = m.usage;
        }
        if left.is_some_and(|month| month >= 0) {
            id += 1;
        } else {
            rows.truncate(start);
        }
    }
}

fn frame(rows: Rows, months: &[DateTime<Utc>]) -> DataFrame {
    let n = rows.id.len();
    let times: Vec<Option<i64>> = rows
        .month
        .iter()
        .map(|&m| Some(months[m].timestamp_micros()))
        .collect();
    let cols = [
        ColumnBuf::Int(rows.id.into()),
        ColumnBuf::Ts(times.into()),
        ColumnBuf::Int(rows.tenure.into()),
        ColumnBuf::Text(rows.plan.into()),
        ColumnBuf::Text(rows.region.into()),
        ColumnBuf::Float(rows.usage.into()),
        ColumnBuf::Float(rows.change.into()),
        ColumnBuf::Int(rows.tickets.into()),
        ColumnBuf::Int(rows.delays.into()),
        ColumnBuf::Float(rows.revenue.into()),
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
    use chrono::TimeZone;
    use std::collections::HashMap;

    fn history(customers: usize, seed: u64) -> (DataFrame, DataFrame) {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0).unwrap();
        let (snapshots, profiles) = churn::simulate(customers, seed, now, true);
        let bills = generate(&snapshots, &profiles, seed, now);
        (snapshots, bills)
    }

    /// (customer, period) -> the row's cells as text, for the columns both tables have.
    fn cells(df: &DataFrame) -> HashMap<(i64, i64), Vec<String>> {
        let ids = df.column("customer_id").unwrap().i64().unwrap();
        let ts = df
            .column("period_end")
            .unwrap()
            .datetime()
            .unwrap()
            .physical();
        let shared = [
            "tenure_months",
            "plan",
            "region",
            "monthly_usage_gb",
            "usage_change_pct",
            "support_tickets",
            "payment_delays",
        ];
        (0..df.height())
            .map(|r| {
                let row = shared
                    .iter()
                    .map(|c| crate::warehouse::frame::cell_text(df.column(c).unwrap(), r))
                    .collect();
                ((ids.get(r).unwrap(), ts.get(r).unwrap()), row)
            })
            .collect()
    }

    #[test]
    fn seeded_and_its_last_six_months_are_the_churn_snapshots() {
        let (snapshots, a) = history(1500, 7);
        let (_, b) = history(1500, 7);
        assert!(a.equals_missing(&b), "same seed, same history");
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0).unwrap();
        let first_snapshot = churn::period_ends(now)[0].timestamp_micros();
        let recent: HashMap<_, _> = cells(&a)
            .into_iter()
            .filter(|((_, t), _)| *t >= first_snapshot)
            .collect();
        assert_eq!(recent, cells(&snapshots));
    }

    #[test]
    fn nobody_pays_after_leaving_and_former_customers_left_before_the_snapshots() {
        let (snapshots, bills) = history(1500, 7);
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0).unwrap();
        let first_snapshot = churn::period_ends(now)[0].timestamp_micros();
        let latest = *churn::period_ends(now).last().unwrap();
        // The month each customer left in, by the churn labels.
        let ids = snapshots.column("customer_id").unwrap().i64().unwrap();
        let ts = snapshots.column("period_end").unwrap().datetime().unwrap();
        let churned = snapshots.column("churned").unwrap().bool().unwrap();
        let mut left: HashMap<i64, i64> = HashMap::new();
        for r in 0..snapshots.height() {
            if churned.get(r) == Some(true) {
                left.insert(ids.get(r).unwrap(), ts.physical().get(r).unwrap());
            }
        }
        let ids = bills.column("customer_id").unwrap().i64().unwrap();
        let ts = bills.column("period_end").unwrap().datetime().unwrap();
        let mut last: HashMap<i64, i64> = HashMap::new();
        for r in 0..bills.height() {
            let (id, t) = (ids.get(r).unwrap(), ts.physical().get(r).unwrap());
            if let Some(l) = left.get(&id) {
                assert!(t <= *l, "customer {id} billed after leaving");
            }
            let e = last.entry(id).or_insert(t);
            *e = (*e).max(t);
        }
        let formers: Vec<i64> = last
            .iter()
            .filter(|(id, _)| **id > 1500)
            .map(|(_, t)| *t)
            .collect();
        assert!(formers.len() > 1000, "{} former customers", formers.len());
        assert!(formers.iter().all(|t| *t < first_snapshot));
        // Every current customer who did not leave is billed in the latest month.
        let active = (1..=1500).filter(|id| !left.contains_key(id)).count();
        let billed_now = last
            .values()
            .filter(|t| **t == latest.timestamp_micros())
            .count();
        assert_eq!(billed_now, active);
    }

    #[test]
    fn revenue_is_skewed_many_small_accounts_and_a_long_tail() {
        let (_, bills) = history(3000, 7);
        let mut r: Vec<f64> = bills
            .column("monthly_revenue")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        r.sort_by(f64::total_cmp);
        let q = |p: f64| r[((r.len() - 1) as f64 * p) as usize];
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        assert!(r[0] >= 1.0);
        assert!(mean > 1.5 * q(0.5), "mean {mean}, median {}", q(0.5));
        assert!(
            q(0.99) > 10.0 * q(0.5),
            "p99 {}, median {}",
            q(0.99),
            q(0.5)
        );
        assert!(q(0.25) < 20.0, "p25 {}", q(0.25));
    }
}
