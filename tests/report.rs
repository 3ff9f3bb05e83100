//! `prescore report`: the HTML page about a job, as a user would check it. The figures in it
//! are the tables' figures, every section is there and says so when it has nothing, an input
//! row is drawn but never printed, text from the tables is escaped, the file stays small, the
//! exit codes are the README's, and the page renders in a real browser (headless Chromium).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{Duration, DurationRound, Utc};
use prescore::warehouse::Value;

use crate::support::*;

const WEATHER: &str = "configs/weather_hourly.toml";
const CHURN: &str = "configs/churn_daily.toml";
const SECTIONS: [&str; 5] = ["runs", "accuracy", "forecasts", "drift", "models"];
/// A temperature no real reading has: the page may draw it, never print it.
const SENTINEL: f64 = 987.654321;

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Runs `prescore report` with `args` into `out`; the page when it was written.
fn report(args: &[&str], out: &Path) -> (Output, String) {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    let out_s = out.display().to_string();
    all.extend_from_slice(&["--out", &out_s]);
    let o = prescore(&all, &[]);
    let html = std::fs::read_to_string(out).unwrap_or_default();
    (o, html)
}

/// What every report must be, whatever its data: whole, with every section, small, and
/// without anything that runs or loads.
fn assert_self_contained(db: &Db, html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", db.name);
    assert!(html.trim_end().ends_with("</html>"), "{}", db.name);
    for id in SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "{}: section {id}",
            db.name
        );
    }
    for banned in [
        "<script", "<link", "<img", "<iframe", "https://", "src=", "@import",
    ] {
        assert!(
            !html.contains(banned),
            "{}: the page holds {banned}",
            db.name
        );
    }
    assert!(html.len() < 1_000_000, "{}: {} bytes", db.name, html.len());
    assert!(
        html.matches("<tr>").count() < 200,
        "{}: tables grow with the data",
        db.name
    );
}

/// The weather job's data, run a day apart so the second run measures the first's forecasts.
/// Returns the config and the second run's as-of time.
fn weather_two_days(db: &Db) -> (PathBuf, chrono::DateTime<Utc>) {
    let flags = ["--customers", "200", "--meters", "20", "--days", "21"];
    seed(db, &[&flags[..], &["--seed", "11"]].concat());
    let cfg = config(db, WEATHER, &[]);
    let c = cfg.to_str().unwrap();
    let hour = Utc::now().duration_trunc(Duration::hours(1)).unwrap();
    let t1 = hour - Duration::days(3) + Duration::minutes(5);
    let t2 = t1 + Duration::days(1);
    for t in [t1, t2] {
        let o = prescore(&["run", "--config", c, "--as-of", &iso(t)], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
    }
    (cfg, t2)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forecast_report_shows_the_tables_figures_and_draws_actuals_without_printing_them() {
    for db in backends("report_forecast") {
        let (cfg, t2) = weather_two_days(&db);
        let c = cfg.to_str().unwrap();
        // Readings after the latest forecast, in the window the page draws.
        let wh = connect(&db).await;
        wh.execute(
            "UPDATE weather SET temperature = $1 WHERE ts > $2 AND ts <= $3",
            &[
                Value::Float(Some(SENTINEL)),
                Value::Ts(Some(t2)),
                Value::Ts(Some(t2 + Duration::hours(6))),
            ],
        )
        .await
        .unwrap();
        wh.close().await;

        let out = db.dir.path().join("weather report.html");
        let (o, html) = report(&["--config", c], &out);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("wrote"),
            "{}",
            text(&o)
        );
        assert_self_contained(&db, &html);
        assert!(
            html.contains("prescore report: weather_hourly"),
            "{}",
            db.name
        );

        // Runs: both, the latest one by its id, with seconds per stage.
        let latest = rows(
            &db,
            "SELECT run_id FROM prescore_runs ORDER BY started_at DESC LIMIT 1",
        )
        .await;
        assert!(html.contains(&latest[0][0]), "{}: latest run", db.name);
        assert!(html.contains("2 succeeded"), "{}", db.name);
        assert!(html.contains("Seconds per stage"), "{}", db.name);

        // Realized accuracy: the view's figures at lead +1, next to seasonal naive's.
        let lead = rows(
            &db,
            "SELECT CAST(n AS BIGINT), mae, naive_mae FROM prescore_accuracy_by_lead \
             WHERE job = 'weather_hourly' AND horizon = 1",
        )
        .await;
        let (n, mae, naive) = (
            &lead[0][0],
            lead[0][1].parse::<f64>().unwrap(),
            lead[0][2].parse::<f64>().unwrap(),
        );
        let row = format!(
            "<td>+1</td><td class=\"num\">{n}</td><td class=\"num\">{mae:.4}</td><td class=\"num\">{naive:.4}</td>"
        );
        assert!(html.contains(&row), "{}: no row {row}", db.name);
        assert!(html.contains("MAE by lead time"), "{}", db.name);

        // Forecasts against actuals: the four regions, the actuals drawn (the sentinel
        // stretches the axis to 800 and beyond) and never printed.
        for region in rows(&db, "SELECT DISTINCT region FROM weather").await {
            assert!(
                html.contains(&format!("series {}", region[0])),
                "{}: series {}",
                db.name,
                region[0]
            );
        }
        assert!(
            html.contains(">800<"),
            "{}: the actuals are not drawn",
            db.name
        );
        assert!(
            !html.contains("987.6"),
            "{}: an input value is printed",
            db.name
        );

        // The forecast's drift (its target and its forecasts), the models and their history.
        let psi = rows(
            &db,
            "SELECT feature FROM prescore_drift WHERE job = 'weather_hourly' ORDER BY psi DESC",
        )
        .await;
        assert!(
            html.contains("Population stability index of run"),
            "{}",
            db.name
        );
        assert!(
            html.contains(&format!(">{}<", psi[0][0])),
            "{}: {psi:?}",
            db.name
        );
        let champion = rows(
            &db,
            "SELECT version FROM prescore_models WHERE job = 'weather_hourly' AND status = 'champion'",
        )
        .await;
        assert!(
            html.contains(&format!("<dd>v{} gbdt", champion[0][0])),
            "{}: champion",
            db.name
        );
        assert!(html.contains("Model history"), "{}", db.name);
        assert!(html.contains(">promoted<"), "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_score_report_by_job_name_flags_drift_and_lists_the_model_history() {
    for db in backends("report_score") {
        seed_churn(&db, 400);
        let cfg = config(&db, CHURN, &[]);
        for _ in 0..2 {
            let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
        }
        // The other target form: a warehouse URL and a job name, no config.
        let out = db.dir.path().join("churn.html");
        let (o, html) = report(&["--warehouse", &db.url, "--job", "churn_daily"], &out);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_self_contained(&db, &html);

        // The latest run's highest PSI, with its flag.
        let top = rows(
            &db,
            "SELECT feature, psi FROM prescore_drift WHERE run_id = \
             (SELECT run_id FROM prescore_runs WHERE job = 'churn_daily' ORDER BY started_at DESC LIMIT 1) \
             ORDER BY psi DESC, feature LIMIT 1",
        )
        .await;
        let (feature, psi) = (&top[0][0], top[0][1].parse::<f64>().unwrap());
        let flag = if psi > 0.25 {
            "shifted"
        } else if psi >= 0.1 {
            "moving"
        } else {
            "stable"
        };
        let row =
            format!("<td>{feature}</td><td class=\"num\">{psi:.4}</td><td><span class=\"badge");
        assert!(html.contains(&row), "{}: no drift row {row}", db.name);
        assert!(html.contains(&format!(">{flag}</span>")), "{}", db.name);

        // Both models, their metrics, and the history of each.
        for m in rows(
            &db,
            "SELECT version, status FROM prescore_models WHERE job = 'churn_daily'",
        )
        .await
        {
            let cell = format!("<td>v{}</td><td><span class=\"badge", m[0]);
            assert!(html.contains(&cell), "{}: model v{}", db.name, m[0]);
        }
        let events = count(&db, "prescore_model_events").await;
        let history = html.split("<h3>Model history</h3>").nth(1).unwrap();
        assert_eq!(
            history.matches("<tr>").count() as i64 - 1,
            events,
            "{}: one row per event, under the header",
            db.name
        );
        // Known to be a score job from its drift: no forecast sections pretending otherwise,
        // and realized accuracy waits for the labels of the month it scored.
        assert!(
            html.contains("measured once the labels of issued scores arrive"),
            "{}",
            db.name
        );
        assert!(html.contains("no forecasts to draw"), "{}", db.name);
        // No customer is listed: the page is the same size whatever the customer count.
        assert!(html.len() < 200_000, "{}: {} bytes", db.name, html.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_without_data_says_so_escapes_the_tables_text_and_exits_as_documented() {
    for db in backends("report_empty") {
        let out = db.dir.path().join("r.html");
        // No job named: a usage error, which names the jobs it knows.
        let (o, _) = report(&["--warehouse", &db.url], &out);
        assert_eq!(o.status.code(), Some(2), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("which job?"), "{}", text(&o));
        assert!(!out.exists(), "{}: nothing written", db.name);

        // A job with nothing recorded: every section says why it is empty.
        let (o, html) = report(&["--warehouse", &db.url, "--job", "nothing_yet"], &out);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_self_contained(&db, &html);
        for says in [
            "no runs recorded yet",
            "no realized accuracy yet: actuals arrive after the forecast&#39;s target times",
            "forecasts against actuals need the job&#39;s config",
            "no drift recorded yet",
            "no model trained yet",
        ] {
            assert!(html.contains(says), "{}: {says}", db.name);
        }
        assert!(
            !html.contains("<svg"),
            "{}: an empty chart is drawn",
            db.name
        );

        // A forecast job's config before its first run.
        let cfg = config(&db, WEATHER, &[]);
        let c = cfg.to_str().unwrap();
        let (o, html) = report(&["--config", c], &out);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(html.contains("no forecasts issued yet"), "{}", db.name);
        let (o, _) = report(&["--config", c, "--job", "churn_daily"], &out);
        assert_eq!(o.status.code(), Some(2), "{}: {}", db.name, text(&o));

        // Text from the tables is escaped: a job name and an error with markup in them.
        let hostile = "<b>job</b>";
        let wh = connect(&db).await;
        wh.execute(
            "INSERT INTO prescore_runs (run_id, job, shard, command, as_of, status, started_at, \
             finished_at, holder, stage_seconds, error) \
             VALUES ('r1', $1, '0/1', 'run', $2, 'failed', $2, $2, 'test', '{\"read\": 1.5}', $3)",
            &[
                Value::text(hostile),
                Value::Ts(Some(Utc::now())),
                Value::text("<script>alert(\"x\")</script> & more"),
            ],
        )
        .await
        .unwrap();
        wh.close().await;
        let (o, html) = report(&["--warehouse", &db.url, "--job", hostile], &out);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_self_contained(&db, &html);
        assert!(!html.contains(hostile), "{}", db.name);
        assert!(html.contains("&lt;b&gt;job&lt;/b&gt;"), "{}", db.name);
        assert!(
            html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more"),
            "{}",
            db.name
        );

        // A file that cannot be written: exit 1, and the old page stays.
        let (o, _) = report(
            &["--warehouse", &db.url, "--job", "nothing_yet"],
            &db.dir.path().join("missing-dir").join("r.html"),
        );
        assert_eq!(o.status.code(), Some(1), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("cannot write the report"), "{}", text(&o));
        // An unreachable warehouse: exit 1, as every command.
        if db.name == "sqlite" {
            let bad = format!(
                "sqlite://{}",
                db.dir.path().join("no/such/dir/x.db").display()
            );
            let (o, _) = report(&["--warehouse", &bad, "--job", "x"], &out);
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        }
    }
}

/// Chromium's name on this machine's PATH, if any.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser", "google-chrome"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var_os("PRESCORE_REQUIRE_CHROMIUM").is_some() {
            panic!("PRESCORE_REQUIRE_CHROMIUM is set but no chromium is on PATH");
        }
        eprintln!("\n!!!!! SKIPPING the_report_renders_in_headless_chromium: no chromium on PATH\n!!!!! install it (apt-get install -y chromium) to check that the report renders\n");
        return;
    };
    let db = sqlite();
    let (cfg, _) = weather_two_days(&db);
    let out = db.dir.path().join("report.html");
    let (o, _) = report(&["--config", cfg.to_str().unwrap()], &out);
    assert!(o.status.success(), "{}", text(&o));

    let png = db.dir.path().join("report.png");
    let profile = db.dir.path().join("chromium-profile");
    let mut child = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", out.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish its screenshot within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    let (w, h, pixels) = png_pixels(&bytes);
    assert_eq!((w, h), (1200, 2000));
    let white = pixels
        .iter()
        .filter(|p| p.iter().all(|c| *c >= 250))
        .count();
    let inked = 1.0 - white as f64 / pixels.len() as f64;
    assert!(
        inked > 0.02,
        "the page is blank: {:.2}% not white",
        inked * 100.0
    );
    let mut colors: Vec<[u8; 3]> = pixels.clone();
    colors.sort_unstable();
    colors.dedup();
    assert!(colors.len() > 50, "{} colours", colors.len());
    // The charts are drawn: the fill of the stage bars (the first stage's colour, #4e79a7,
    // or the next ones') covers whole rectangles.
    let stage_fill = [
        [0x4e, 0x79, 0xa7],
        [0xf2, 0x8e, 0x2b],
        [0xe1, 0x57, 0x59],
        [0x76, 0xb7, 0xb2],
    ];
    let filled = pixels.iter().filter(|p| stage_fill.contains(p)).count();
    assert!(
        filled > 500,
        "{filled} pixels of stage bars: the SVG did not render"
    );
}

/// Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes) to RGB pixels.
fn png_pixels(bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let (mut w, mut h, mut channels) = (0, 0, 0);
    let mut data = Vec::new();
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = be(&bytes[pos..]);
        let chunk = &bytes[pos + 8..pos + 8 + len];
        match &bytes[pos + 4..pos + 8] {
            b"IHDR" => {
                (w, h) = (be(chunk), be(&chunk[4..]));
                assert_eq!((chunk[8], chunk[12]), (8, 0), "8-bit, not interlaced");
                channels = match chunk[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
            }
            b"IDAT" => data.extend_from_slice(chunk),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(w * h);
    for y in 0..h {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let mut cur = line[1..].to_vec();
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 } as i16;
            let b = prev[i] as i16;
            let c = if i >= channels { prev[i - channels] } else { 0 } as i16;
            let add = match line[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            cur[i] = cur[i].wrapping_add(add as u8);
        }
        pixels.extend(cur.chunks(channels).map(|p| [p[0], p[1], p[2]]));
        prev = cur;
    }
    (w, h, pixels)
}
