//! Realized accuracy of score jobs: the scores a run issued, kept in `<table>_history`, are
//! measured against the labels that arrive later, and the recorded figures match a hand
//! computation from the rows of the tables.

use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";

/// One issued score with its label, as the test reads them back.
struct Labeled {
    id: i64,
    score: f64,
    label: f64,
}

fn auc_by_pairs(rows: &[Labeled]) -> f64 {
    let (pos, neg): (Vec<&Labeled>, Vec<&Labeled>) = rows.iter().partition(|r| r.label == 1.0);
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += match p.score.partial_cmp(&n.score).unwrap() {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n as f64
}

fn close(a: f64, b: f64, what: &str, backend: &str) {
    assert!(
        (a - b).abs() < 1e-9,
        "{backend}: {what}: recorded {a}, by hand {b}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn issued_scores_are_measured_against_labels_once_they_arrive() {
    for db in backends("labels") {
        seed_churn(&db, 1500);
        let cfg = config(&db, CHURN, &[]);
        let c = cfg.to_str().unwrap();

        // The run scores the latest month, whose churn is not known yet: nothing to record,
        // and no failure. (A minute back, so that the later run issues at another time.)
        let earlier = chrono::Utc::now() - chrono::Duration::minutes(1);
        let earlier = earlier.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let o = prescore(&["run", "--config", c, "--as-of", &earlier], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(
            !text(&o).contains("could not record realized label accuracy"),
            "{}: {}",
            db.name,
            text(&o)
        );
        assert_eq!(
            count(&db, "prescore_label_accuracy").await,
            0,
            "{}",
            db.name
        );
        assert_eq!(count(&db, "prescore_calibration").await, 0, "{}", db.name);
        let o = prescore(&["evaluate", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("0 of"),
            "{}: {}",
            db.name,
            text(&o)
        );
        assert_eq!(
            count(&db, "prescore_label_accuracy").await,
            0,
            "{}",
            db.name
        );

        // The month ends: the labels of the scored snapshot arrive.
        let wh = connect(&db).await;
        wh.execute(
            "UPDATE customer_months SET churned = \
             CASE WHEN support_tickets + payment_delays >= 2 THEN TRUE ELSE FALSE END \
             WHERE churned IS NULL",
            &[],
        )
        .await
        .unwrap();
        wh.close().await;
        let o = prescore(&["evaluate", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));

        // By hand: the issued scores joined with the labels of the month they scored.
        let labeled: Vec<Labeled> = rows(
            &db,
            "SELECT h.customer_id, h.score, CASE WHEN m.churned THEN 1 ELSE 0 END \
             FROM churn_scores_history h JOIN customer_months m ON m.customer_id = h.customer_id \
             AND m.period_end = (SELECT MAX(period_end) FROM customer_months) \
             ORDER BY h.score, h.customer_id",
        )
        .await
        .iter()
        .map(|r| Labeled {
            id: r[0].parse().unwrap(),
            score: r[1].parse().unwrap(),
            label: r[2].parse().unwrap(),
        })
        .collect();
        let n = labeled.len();
        let positives = labeled.iter().filter(|r| r.label == 1.0).count();
        assert!(
            n > 1000 && positives > 0 && positives < n,
            "{}: {positives} of {n}",
            db.name
        );
        let recorded = rows(
            &db,
            "SELECT model_version, n, auc, log_loss, brier, positive_rate, mean_score \
             FROM prescore_label_accuracy WHERE job = 'churn_daily'",
        )
        .await;
        assert_eq!(recorded.len(), 1, "{}: one issue day, one model", db.name);
        let r = &recorded[0];
        let f = |i: usize| r[i].parse::<f64>().unwrap();
        assert_eq!(r[0], "1", "{}", db.name);
        assert_eq!(r[1], n.to_string(), "{}", db.name);
        let auc = auc_by_pairs(&labeled);
        let log_loss = mean(labeled.iter().map(|r| {
            let p = r.score.clamp(1e-15, 1.0 - 1e-15);
            -(r.label * p.ln() + (1.0 - r.label) * (1.0 - p).ln())
        }));
        let brier = mean(labeled.iter().map(|r| (r.score - r.label).powi(2)));
        close(f(2), auc, "AUC", db.name);
        close(f(3), log_loss, "log loss", db.name);
        close(f(4), brier, "Brier", db.name);
        close(f(5), positives as f64 / n as f64, "positive rate", db.name);
        close(
            f(6),
            mean(labeled.iter().map(|r| r.score)),
            "mean score",
            db.name,
        );
        eprintln!(
            "{}: realized on {n} churn scores ({positives} positive): AUC {auc:.4}, log loss {log_loss:.4}, Brier {brier:.4}",
            db.name
        );

        // The top decile: the highest tenth of the scores (NTILE(10): the first n % 10
        // deciles hold one more), ties by customer.
        let top = &labeled[9 * (n / 10) + 9.min(n % 10)..];
        let decile = rows(
            &db,
            "SELECT n, mean_score, mean_label FROM prescore_calibration \
             WHERE job = 'churn_daily' AND decile = 10",
        )
        .await;
        assert_eq!(decile[0][0], top.len().to_string(), "{}", db.name);
        close(
            decile[0][1].parse().unwrap(),
            mean(top.iter().map(|r| r.score)),
            "top decile's mean score",
            db.name,
        );
        close(
            decile[0][2].parse().unwrap(),
            mean(top.iter().map(|r| r.label)),
            "top decile's observed rate",
            db.name,
        );
        assert!(top.iter().all(|r| r.id > 0));
        let deciles = rows(
            &db,
            "SELECT COUNT(*), CAST(SUM(n) AS BIGINT) FROM prescore_calibration WHERE job = 'churn_daily'",
        )
        .await;
        assert_eq!(
            deciles[0],
            vec!["10".to_string(), n.to_string()],
            "{}",
            db.name
        );

        // The next run measures what was issued in its labels window by itself: the issue
        // day (or two, around midnight) now holds both issues of the same, labeled, month.
        let o = prescore(&["score", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("prescore_label_accuracy"),
            "{}: {}",
            db.name,
            text(&o)
        );
        let total = rows(
            &db,
            "SELECT CAST(SUM(n) AS BIGINT) FROM prescore_label_accuracy WHERE job = 'churn_daily'",
        )
        .await;
        assert_eq!(total[0][0], (2 * n).to_string(), "{}", db.name);

        // The report draws it: the realized AUC and the calibration table.
        let out = db.dir.path().join("churn.html");
        let o = prescore(
            &["report", "--config", c, "--out", out.to_str().unwrap()],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(
            html.contains("realized AUC")
                && html.contains("Observed rate against mean score, by score decile"),
            "{}",
            db.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_need_a_score_job_that_keeps_its_history() {
    let db = sqlite();
    let cfg = config(
        &db,
        CHURN,
        &[("keep_history = \"120d\"", "keep_history = \"0\"")],
    );
    let o = prescore(&["check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("input.labels_sql") && text(&o).contains("churn_scores_history"),
        "{}",
        text(&o)
    );
    // Without labels_sql, `evaluate` says what to set.
    let cfg = config(&db, CHURN, &[("labels_sql = ", "# labels_sql = ")]);
    let o = prescore(&["evaluate", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no input.labels_sql"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_scores_get_mae_rmse_and_bias_from_the_run_itself() {
    for db in backends("labels_ltv") {
        seed_churn(&db, 800);
        // A stand-in label known at once: twelve times the scored month's revenue.
        let labels = sql_file(
            &db,
            "ltv_labels.sql",
            "SELECT customer_id, 12 * monthly_revenue AS revenue_next_12m FROM customer_revenue \
             WHERE period_end = (SELECT MAX(period_end) FROM customer_revenue WHERE period_end <= :as_of)",
        );
        let cfg = config(
            &db,
            "configs/ltv_daily.toml",
            &[
                (
                    "[input]\n",
                    &format!("[input]\nlabels_sql = \"{labels}\"\n"),
                ),
                ("[output]\n", "[output]\nkeep_history = \"90d\"\n"),
            ],
        );
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let pairs: Vec<(f64, f64)> = rows(
            &db,
            "SELECT h.score, 12 * r.monthly_revenue FROM ltv_scores_history h \
             JOIN customer_revenue r ON r.customer_id = h.customer_id \
             AND r.period_end = (SELECT MAX(period_end) FROM customer_revenue)",
        )
        .await
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
        .collect();
        assert!(pairs.len() > 500, "{}: {}", db.name, pairs.len());
        let recorded = rows(
            &db,
            "SELECT n, mae, rmse, bias, auc, log_loss FROM prescore_label_accuracy",
        )
        .await;
        let r = &recorded[0];
        let f = |i: usize| r[i].parse::<f64>().unwrap();
        assert_eq!(r[0], pairs.len().to_string(), "{}", db.name);
        let mae = mean(pairs.iter().map(|(s, y)| (s - y).abs()));
        let rmse = mean(pairs.iter().map(|(s, y)| (s - y).powi(2))).sqrt();
        let bias = mean(pairs.iter().map(|(s, y)| s - y));
        // Sums of a few hundred revenues: compared relative to their size.
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(near(f(1), mae), "{}: MAE {} by hand {mae}", db.name, f(1));
        assert!(
            near(f(2), rmse),
            "{}: RMSE {} by hand {rmse}",
            db.name,
            f(2)
        );
        assert!(
            near(f(3), bias),
            "{}: bias {} by hand {bias}",
            db.name,
            f(3)
        );
        assert_eq!((r[4].as_str(), r[5].as_str()), ("", ""), "{}", db.name);
        eprintln!(
            "{}: ltv scores against 12 x the scored month's revenue, n {}: MAE {mae:.2}, RMSE {rmse:.2}, bias {bias:.2}",
            db.name,
            pairs.len()
        );
    }
}
