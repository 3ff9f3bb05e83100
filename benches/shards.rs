//! The sharded part of `make bench` (`--only shards`): the churn score job on
//! `--shard-entities` customers, trained once, then scored by 1, 2 and 4 shard processes
//! started together, each reading only its own customers (`:shard_index` / `:shard_count`
//! pushed down into the scoring SQL) and upserting over every row of the published table.
//! For each process it prints its rows read and seconds per stage, for each group its wall
//! time, and from the unsharded process the rows/s per stage and per core, for sizing.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};

use prescore::config::{Job, JobKind};
use prescore::demo::churn;
use prescore::pipeline::Report;
use prescore::warehouse::{Warehouse, WriteMode};

use super::{
    fresh_database, load_table, mib, rate, thousands, vacuum_analyze, Args, ChildResult, ChildSpec,
    Res, CHILD_ENV,
};

/// The shard counts measured, each a group of processes started together.
const COUNTS: [u32; 3] = [1, 2, 4];

/// Makes the scoring SQL read only this shard's customers, as a user's SQL would.
pub fn push_down(job: &mut Job) {
    let key = job.input.key.to_string();
    if let JobKind::Score { score_sql, .. } = &mut job.kind {
        score_sql.text = format!(
            "{}\n  AND {key} % :shard_count = :shard_index\n",
            score_sql.text.trim_end().trim_end_matches(';')
        );
    }
}

/// One process of a group, as measured.
struct Process {
    shard: String,
    wall: f64,
    peak_rss_kib: Option<u64>,
    report: Result<Report, String>,
}

/// Runs one child process to the end and reads its [`ChildResult`].
pub(crate) async fn child(spec: ChildSpec) -> Res<(f64, Option<u64>, Result<Report, String>)> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, serde_json::to_string(&spec)?)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(
        match stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<ChildResult>(l).ok())
        {
            Some(r) => (r.wall, r.peak_rss_kib, r.report),
            None => (
                0.0,
                None,
                Err(format!("the child process exited with {}", out.status)),
            ),
        },
    )
}

fn seconds(r: &Report, stage: &str) -> f64 {
    r.stage_seconds
        .iter()
        .filter(|(n, _)| n == stage)
        .map(|(_, s)| s)
        .sum()
}

pub async fn part(args: &Args, config_path: &Path) -> Res<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "\n=== sharded score job {}: {} customers, 1, 2 and 4 shard processes started together, SQL push-down ===",
        config_path.display(),
        thousands(args.shard_entities as u64)
    );
    let url = fresh_database(&args.warehouse).await?;
    let wh = Warehouse::connect(&url, 4).await?;
    let now: DateTime<Utc> = Utc::now().trunc_subsecs(0);
    let t = Instant::now();
    let df = churn::generate(args.shard_entities, args.seed, now);
    let loaded = df.height();
    let table = load_table(&wh, churn::TABLE, &["customer_id", "period_end"], &df).await?;
    drop(df);
    vacuum_analyze(&wh, &[&table]).await?;
    wh.close().await;
    println!(
        "loaded {} rows in {:.1} s",
        thousands(loaded as u64),
        t.elapsed().as_secs_f64()
    );

    // Train once (and publish every customer), as a deployment does before its shards run.
    let spec = |shard: Option<(u32, u32)>, train: bool| ChildSpec {
        config: config_path.to_path_buf(),
        url: url.clone(),
        as_of: now,
        train,
        write: WriteMode::Upsert,
        algorithm: args.algorithm.clone(),
        shard,
        push_down: true,
        group: shard.map(|(_, n)| format!("bench-{n}-shards")),
    };
    let (wall, _, report) = child(spec(None, true)).await?;
    let report = report.map_err(|e| format!("the training run failed: {e}"))?;
    println!(
        "trained and published once: {:.2} s, {} customers",
        wall,
        thousands(report.entities as u64)
    );

    let mut groups: Vec<(u32, f64, Vec<Process>)> = Vec::new();
    for n in COUNTS {
        let t = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let spec = spec(Some((k, n)), false);
                tokio::spawn(async move { child(spec).await.map_err(|e| e.to_string()) })
            })
            .collect();
        let mut procs = Vec::new();
        for (k, h) in handles.into_iter().enumerate() {
            let (wall, peak_rss_kib, report) = h.await.map_err(|e| e.to_string())??;
            procs.push(Process {
                shard: format!("{k}/{n}"),
                wall,
                peak_rss_kib,
                report,
            });
        }
        groups.push((n, t.elapsed().as_secs_f64(), procs));
    }

    println!(
        "\n  {:<6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "shard",
        "rows read",
        "scored",
        "read s",
        "score s",
        "publ. s",
        "other s",
        "wall s",
        "peak RSS"
    );
    for (n, group_wall, procs) in &groups {
        for p in procs {
            match &p.report {
                Ok(r) => {
                    let (read, score, publish) = (
                        seconds(r, "read") + seconds(r, "contract"),
                        seconds(r, "features") + seconds(r, "score"),
                        seconds(r, "publish"),
                    );
                    println!(
                        "  {:<6} {:>10} {:>10} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9}",
                        p.shard,
                        thousands(r.rows_read as u64),
                        thousands(r.entities as u64),
                        read,
                        score,
                        publish,
                        p.wall - read - score - publish,
                        p.wall,
                        mib(p.peak_rss_kib)
                    );
                }
                Err(e) => println!("  {:<6} FAILED after {:.2} s: {e}", p.shard, p.wall),
            }
        }
        let read: usize = procs
            .iter()
            .filter_map(|p| p.report.as_ref().ok())
            .map(|r| r.rows_read)
            .sum();
        println!(
            "  {n} shard(s): group wall {group_wall:.2} s (first start to last exit), {} rows read in all, {} rows/s",
            thousands(read as u64),
            rate(read as u64, *group_wall)
        );
    }

    // Sizing: the unsharded process's stages, per second and per core of this machine.
    if let Some(r) = groups
        .first()
        .and_then(|(_, _, p)| p.first())
        .and_then(|p| p.report.as_ref().ok())
    {
        println!(
            "\nsizing, from the 1-shard process ({cores} cores; per core = rows/s / {cores}, as each stage keeps the machine busy: client and server for read and publish, the scoring pool on every core):"
        );
        for (name, rows, secs) in [
            (
                "read (+ contract)",
                r.rows_read as u64,
                seconds(r, "read") + seconds(r, "contract"),
            ),
            (
                "features + score",
                r.entities as u64,
                seconds(r, "features") + seconds(r, "score"),
            ),
            ("publish (upsert)", r.rows_written, seconds(r, "publish")),
        ] {
            let per_s = if secs > 0.0 { rows as f64 / secs } else { 0.0 };
            println!(
                "  {name:<18} {:>10} rows {:>8.3} s {:>12} rows/s {:>12} rows/s per core",
                thousands(rows),
                secs,
                thousands(per_s as u64),
                thousands((per_s / cores as f64) as u64)
            );
        }
    }
    Ok(())
}
