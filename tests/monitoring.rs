//! What operators check after the fact: every issued forecast is kept in the history table,
//! and a backfill (an older `--as-of`) fills history and gaps but never overwrites a fresher
//! prediction.

use crate::support::*;

const ENERGY: &str = "configs/energy_hourly.toml";

fn at(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_keeps_fresher_rows_and_the_history_keeps_every_forecast() {
    for db in backends("backfill") {
        seed_energy(&db, 30, 30, 5);
        let cfg = config(
            &db,
            ENERGY,
            &[("retrain = \"24h\"", "retrain = \"always\"")],
        );
        let c = cfg.to_str().unwrap();
        let now = chrono::Utc::now();
        let o = prescore(&["run", "--config", c, "--as-of", &at(now)], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let fresh = rows(
            &db,
            "SELECT series_id, target_ts, yhat, run_id FROM energy_forecasts ORDER BY series_id, target_ts",
        )
        .await;
        let series = rows(
            &db,
            "SELECT COUNT(DISTINCT series_id) FROM energy_forecasts",
        )
        .await[0][0]
            .parse::<usize>()
            .unwrap();
        assert!(series > 20, "{}: {series} series", db.name);

        // A backfill three hours back: its overlapping target hours must not replace the
        // fresher forecasts; the hours only it forecasts are filled in.
        let o = prescore(
            &[
                "run",
                "--config",
                c,
                "--as-of",
                &at(now - chrono::Duration::hours(3)),
            ],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let after = rows(
            &db,
            "SELECT series_id, target_ts, yhat, run_id FROM energy_forecasts ORDER BY series_id, target_ts",
        )
        .await;
        for row in &fresh {
            assert!(
                after.contains(row),
                "{}: the fresher row {row:?} changed",
                db.name
            );
        }
        // The hours only the backfill forecasts, read from its history rows.
        let only_backfill = rows(
            &db,
            "SELECT COUNT(*) FROM energy_forecasts_history b \
             WHERE b.as_of = (SELECT MIN(as_of) FROM energy_forecasts_history) \
             AND NOT EXISTS (SELECT 1 FROM energy_forecasts_history f \
                 WHERE f.as_of > b.as_of AND f.series_id = b.series_id AND f.target_ts = b.target_ts)",
        )
        .await[0][0]
            .parse::<usize>()
            .unwrap();
        assert!(
            only_backfill >= series,
            "{}: {only_backfill} hours filled",
            db.name
        );
        assert_eq!(
            after.len(),
            fresh.len() + only_backfill,
            "{}: the earlier hours are filled in, nothing else added",
            db.name
        );
        // The history holds both runs' forecasts, every row.
        let history = rows(
            &db,
            "SELECT COUNT(*), COUNT(DISTINCT as_of) FROM energy_forecasts_history",
        )
        .await;
        assert_eq!(
            (history[0][0].as_str(), history[0][1].as_str()),
            ((2 * 24 * series).to_string().as_str(), "2"),
            "{}",
            db.name
        );
    }
}
