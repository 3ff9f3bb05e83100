//! The peer comparison of `make bench`: prescore against the pandas + LightGBM script a team
//! would write instead (`benches/peer/`), on the same PostgreSQL data (10,000 meters × 336
//! hours by default), whole process against whole process, alternating A B A B after one
//! warm-up run of each, medians of `--peer-runs`. Peak RSS: the peer reports its own
//! (`ru_maxrss`); prescore's is its `VmHWM`, sampled every 20 ms while it runs. Accuracy:
//! both forecast the last 24 hours from a cut-off 24 hours before the data ends, and both
//! MAEs are computed against the same actuals (the peer's `holdout_mae_recursive`; prescore's
//! published rows of a run `--as-of` the cut-off).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use prescore::warehouse::Warehouse;

use super::{psql, psql_ok, with_database, Res};

const PEER_DB: &str = "prescore_peer";
/// The data's last hour (gen_energy.sql starts 2024-01-01 00:00 UTC; 336 hours).
const END: &str = "2024-01-14T23:00:00Z";
const CUTOFF: &str = "2024-01-13T23:00:00Z";

/// One whole-process run.
struct Timed {
    wall: f64,
    peak_mib: Option<f64>,
}

/// Finds a Python that can run the peer.
fn peer_python() -> Option<String> {
    let candidates = match std::env::var("PEER_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".to_string()],
    };
    candidates.into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import pandas, lightgbm, psycopg"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Runs a command to completion, sampling its VmHWM; fails on a non-zero exit.
async fn timed(mut cmd: tokio::process::Command, what: &str) -> Res<(Timed, String)> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let pid = child.id();
    let sampler = tokio::spawn(async move {
        let mut peak: Option<f64> = None;
        loop {
            let status =
                pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok());
            let Some(status) = status else { break };
            if let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
            {
                peak = Some(kib / 1024.0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let out = child.wait_with_output().await?;
    let wall = start.elapsed().as_secs_f64();
    let peak_mib = sampler.await.unwrap_or(None);
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok((
        Timed { wall, peak_mib },
        String::from_utf8_lossy(&out.stdout).into(),
    ))
}

fn prescore_cmd(url: &str, as_of: &str) -> tokio::process::Command {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("prescore")))
        .unwrap_or_else(|| PathBuf::from("prescore"));
    let mut c = tokio::process::Command::new(bin);
    c.args([
        "run",
        "--config",
        repo("benches/peer/energy_peer.toml")
            .to_str()
            .unwrap_or_default(),
        "--as-of",
        as_of,
        "-q",
    ])
    .env("DATABASE_URL", url);
    c
}

fn peer_cmd(python: &str, url: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(python);
    c.args([
        repo("benches/peer/peer_python.py")
            .to_str()
            .unwrap_or_default(),
        "--dsn",
        url,
        "--model",
        "lgbm",
    ]);
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// prescore's MAE on the last 24 hours, forecast from the cut-off, and seasonal naive's.
async fn prescore_holdout(url: &str) -> Res<(f64, f64)> {
    let (_, _) = timed(prescore_cmd(url, CUTOFF), "prescore (holdout run)").await?;
    let wh = Warehouse::connect(url, 2).await?;
    let rows = wh
        .fetch(
            "SELECT avg(abs(f.yhat - r.kwh)), avg(abs(d.kwh - r.kwh)) \
             FROM peer_forecasts f \
             JOIN raw.meter_readings r ON r.meter_id = f.series_id AND r.ts = f.target_ts \
             JOIN raw.meter_readings d ON d.meter_id = f.series_id AND d.ts = f.target_ts - interval '168 hours' \
             WHERE f.as_of = $1::timestamptz",
            &[prescore::warehouse::Value::text(CUTOFF)],
        )
        .await;
    wh.close().await;
    let rows = rows?;
    let r = rows.first().ok_or("no holdout rows")?;
    Ok((
        r[0].as_f64().ok_or("no holdout forecast")?,
        r[1].as_f64().unwrap_or(f64::NAN),
    ))
}

/// Runs the comparison on a fresh database of `meters` × 336 hours.
pub async fn compare(server: &str, meters: usize, runs: usize, keep: bool) -> Res<()> {
    println!(
        "\n=== peer comparison: prescore vs pandas + LightGBM, {meters} meters x 336 hours ==="
    );
    let Some(python) = peer_python() else {
        println!(
            "skipped the peer comparison: no Python with pandas, lightgbm and psycopg \
             (set PEER_PYTHON to one, e.g. a venv with `pip install pandas lightgbm 'psycopg[binary]' scikit-learn`)"
        );
        return Ok(());
    };
    let admin = Warehouse::connect(server, 2).await?;
    admin
        .execute(
            &format!("DROP DATABASE IF EXISTS {PEER_DB} WITH (FORCE)"),
            &[],
        )
        .await?;
    admin
        .execute(&format!("CREATE DATABASE {PEER_DB}"), &[])
        .await?;
    admin.close().await;
    let url = with_database(server, PEER_DB);
    let gen = std::time::Instant::now();
    let mut c = psql(&url);
    c.args([
        "-q",
        "-v",
        &format!("n_meters={meters}"),
        "-v",
        "n_hours=336",
        "-f",
        repo("benches/peer/gen_energy.sql")
            .to_str()
            .unwrap_or_default(),
    ]);
    let out = c.output().await?;
    if !out.status.success() {
        return Err(format!("gen_energy.sql: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    println!(
        "generated in {:.1} s (gen_energy.sql)",
        gen.elapsed().as_secs_f64()
    );
    psql_ok(&url, "VACUUM ANALYZE raw.meter_readings").await?;

    // Warm-up, then A B A B.
    timed(prescore_cmd(&url, END), "prescore").await?;
    timed(peer_cmd(&python, &url), "the peer").await?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut peer_json = serde_json::Value::Null;
    for i in 0..runs {
        let (a, _) = timed(prescore_cmd(&url, END), "prescore").await?;
        let (b, stdout) = timed(peer_cmd(&python, &url), "the peer").await?;
        println!(
            "  run {}: prescore {:.2} s, peer {:.2} s",
            i + 1,
            a.wall,
            b.wall
        );
        peer_json = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        ours.push(a);
        theirs.push(b);
    }
    let (mae, naive168) = prescore_holdout(&url).await?;
    let ours_wall = median(ours.iter().map(|t| t.wall).collect());
    let theirs_wall = median(theirs.iter().map(|t| t.wall).collect());
    let peaks: Vec<f64> = ours.iter().filter_map(|t| t.peak_mib).collect();
    let ours_peak = if peaks.is_empty() {
        "unknown".to_string()
    } else {
        format!("{:.0} MiB", median(peaks))
    };
    let f = |k: &str| peer_json.get(k).and_then(|v| v.as_f64());
    let peer_stage = |k: &str| {
        peer_json
            .get("timings_s")
            .and_then(|t| t.get(k))
            .and_then(|v| v.as_f64())
            .map(|v| format!("{v:.2} s"))
            .unwrap_or_default()
    };
    println!("\n                     prescore       peer (pandas + LightGBM)");
    println!(
        "  wall, median       {:<14} {:.2} s   (prescore x{:.2} of the peer)",
        format!("{ours_wall:.2} s"),
        theirs_wall,
        ours_wall / theirs_wall
    );
    println!(
        "  peak RSS           {:<14} {}",
        ours_peak,
        f("peak_rss_mb")
            .map(|v| format!("{v:.0} MiB"))
            .unwrap_or_default()
    );
    println!(
        "  holdout MAE        {:<14} {}   (last 24 h from the cut-off; naive t-168 {:.4})",
        format!("{mae:.4}"),
        f("holdout_mae_recursive")
            .map(|v| format!("{v:.4}"))
            .unwrap_or_default(),
        naive168
    );
    println!(
        "  peer stages        read {}, features {}, train {}, eval {}, predict {}, write {}",
        peer_stage("read"),
        peer_stage("features"),
        peer_stage("train"),
        peer_stage("eval"),
        peer_stage("predict"),
        peer_stage("write")
    );
    if !keep {
        let admin = Warehouse::connect(server, 2).await?;
        admin
            .execute(
                &format!("DROP DATABASE IF EXISTS {PEER_DB} WITH (FORCE)"),
                &[],
            )
            .await?;
        admin.close().await;
    }
    Ok(())
}
