//! The subcommands, each a short function from parsed flags to printed output and a result.
//! `main` calls [`dispatch`] and maps its error to an exit code.

use std::path::Path;

use chrono::{DateTime, SubsecRound, Utc};

use crate::cli::{
    CheckArgs, Command, EvaluateArgs, ModelsAction, ModelsArgs, ReportArgs, RunArgs, RunsArgs,
    StatusArgs, Target,
};
use crate::config::{self, Job, KindTag};
use crate::error::Error;
use crate::pipeline::{self, Mode, Options, Shard};
use crate::warehouse::{params, redact, Warehouse};
use crate::{ledger, registry, report};

mod metrics;

/// Runs a subcommand; `metrics_file` is `--metrics-file` (used by run, train and score).
pub async fn dispatch(command: Command, metrics_file: Option<&Path>) -> Result<(), Error> {
    match command {
        Command::Init(t) => init(t).await,
        Command::Run(a) => run(a, Mode::Run, metrics_file).await,
        Command::Train(a) => run(a, Mode::Train, metrics_file).await,
        Command::Score(a) => run(a, Mode::Score, metrics_file).await,
        Command::Check(a) => check(a).await,
        Command::Runs(a) => runs(a).await,
        Command::Models(a) => models(a).await,
        Command::Status(a) => status(a).await,
        Command::Evaluate(a) => evaluate(a).await,
        Command::Report(a) => html_report(a).await,
        Command::Demo(a) => crate::demo::demo(a).await,
    }
}

/// Opens the warehouse a job names, with enough connections for its threads.
pub async fn connect(job: &Job) -> Result<Warehouse, Error> {
    let url = job.warehouse.expose();
    tracing::info!(warehouse = %redact(url), job = %job.name, "connecting");
    let l = job.limits;
    Ok(Warehouse::connect_bounded(url, 4, l.lock, l.statement).await?)
}

async fn connect_target(t: &Target) -> Result<(Warehouse, Option<Job>), Error> {
    match &t.config {
        Some(path) => {
            let job = config::load(path)?;
            Ok((connect(&job).await?, Some(job)))
        }
        None => {
            let url = t
                .warehouse
                .clone()
                .unwrap_or_else(|| crate::warehouse::DEFAULT_URL.to_string());
            Ok((Warehouse::connect(&url, 2).await?, None))
        }
    }
}

/// as_of defaults to now, truncated to whole seconds so SQLite text comparisons are exact.
fn as_of(given: Option<DateTime<Utc>>) -> DateTime<Utc> {
    given.unwrap_or_else(Utc::now).trunc_subsecs(0)
}

fn shard(given: Option<Shard>) -> Result<Shard, Error> {
    if let Some(s) = given {
        return Ok(s);
    }
    // Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX; PRESCORE_SHARDS says how many.
    match (
        std::env::var("JOB_COMPLETION_INDEX"),
        std::env::var("PRESCORE_SHARDS"),
    ) {
        (Ok(k), Ok(n)) => crate::cli::parse_shard(&format!("{k}/{n}")).map_err(Error::Usage),
        _ => Ok(Shard::ALL),
    }
}

/// `prescore evaluate`: realized accuracy over a range of target days (forecasts) or issue
/// days (scores).
async fn evaluate(a: EvaluateArgs) -> Result<(), Error> {
    use crate::monitor::{
        accuracy,
        evaluate::{self, Range},
    };
    let job = config::load(&a.config)?;
    if job.kind.tag() == KindTag::Score && job.input.labels.is_none() {
        // Before connecting: the config alone says there is nothing to evaluate.
        return Err(evaluate::EvaluateError::NoLabels { job: job.name }.into());
    }
    let as_of = as_of(a.as_of);
    let keep = job.output.keep_history.unwrap_or_default();
    let oldest = as_of - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::days(90));
    let to = a.to.unwrap_or(as_of.date_naive());
    let from = a.from.unwrap_or(oldest.date_naive());
    if from > to {
        return Err(Error::Usage(format!("--from {from} is after --to {to}")));
    }
    let wh = connect(&job).await?;
    wh.migrate().await?;
    let range = Range::days(from, to, as_of);
    if job.kind.tag() == KindTag::Score {
        let result = crate::monitor::evaluate_scores::evaluate(&job, &wh, range).await;
        wh.close().await;
        let e = result?;
        println!(
            "prescore: job {} evaluated the scores issued {from} to {to} ({} issue times): {} of {} issued scores have a label, {} days in prescore_label_accuracy",
            job.name, e.issue_times, e.matched, e.issued, e.groups.len()
        );
        print!("{}", report::label_table(&e.groups));
        return Ok(());
    }
    let result = evaluate::evaluate(&job, &wh, range, None).await;
    wh.close().await;
    let e = result?;
    println!(
        "prescore: job {} evaluated {from} to {to} ({} days, actuals as of {}): {} forecasts with an actual, {} rows in prescore_accuracy",
        job.name,
        range.day_count(),
        as_of.format("%Y-%m-%d %H:%M:%SZ"),
        e.matched,
        e.groups.len()
    );
    print!(
        "{}",
        report::accuracy_table(&accuracy::by_horizon(&e.groups))
    );
    Ok(())
}

/// `prescore report`: the HTML page about one job.
async fn html_report(a: ReportArgs) -> Result<(), Error> {
    use crate::monitor::html;
    let (wh, job) = connect_target(&a.target).await?;
    let result = async {
        wh.migrate().await?;
        let name = match (&a.job, &job) {
            (Some(n), Some(j)) if *n != j.name => {
                return Err(Error::Usage(format!(
                    "--job {n} is not the config's job ({}): give one or the other",
                    j.name
                )))
            }
            (Some(n), _) => n.clone(),
            (None, Some(j)) => j.name.clone(),
            (None, None) => {
                let known = wh
                    .fetch("SELECT DISTINCT job FROM prescore_runs ORDER BY job", &[])
                    .await?;
                let known: Vec<String> = known.iter().map(|r| r[0].display()).collect();
                return Err(Error::Usage(format!(
                    "which job? give --config FILE or --job NAME (jobs in the ledger: {})",
                    if known.is_empty() {
                        "none yet".into()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        };
        let gathered = html::gather(&wh, &name, job.as_ref(), Utc::now().trunc_subsecs(0)).await?;
        Ok(gathered)
    }
    .await;
    wh.close().await;
    let gathered = result?;
    let page = html::render(&gathered);
    if a.out.as_os_str() == "-" {
        print!("{page}");
        return Ok(());
    }
    html::write(&a.out, &page)?;
    println!(
        "prescore: wrote {} ({} KB) for job {}: {}",
        a.out.display(),
        page.len().div_ceil(1024),
        gathered.job,
        gathered.summary()
    );
    Ok(())
}

async fn init(t: Target) -> Result<(), Error> {
    let (wh, _) = connect_target(&t).await?;
    wh.migrate().await?;
    println!("prescore: tables ready in the {} warehouse (prescore_runs, prescore_models, prescore_model_events, prescore_metrics, prescore_accuracy, prescore_leases)", wh.dialect().name());
    Ok(())
}

async fn run(a: RunArgs, mode: Mode, metrics_file: Option<&Path>) -> Result<(), Error> {
    let job = match config::load(&a.config) {
        Ok(job) => job,
        Err(e) => {
            let e = Error::from(e);
            if let Some(path) = metrics_file {
                metrics::config_failed(path, &e);
            }
            return Err(e);
        }
    };
    let opts = Options {
        mode,
        as_of: as_of(a.as_of),
        shard: shard(a.shard)?,
        group: a.run_group,
    };
    let wh = match connect(&job).await {
        Ok(wh) => wh,
        Err(e) => {
            if let Some(path) = metrics_file {
                metrics::write(path, &job, None, None, Err(&e)).await;
            }
            return Err(e);
        }
    };
    let (report, result) = pipeline::run_reported(&job, &wh, &opts).await;
    if let Some(path) = metrics_file {
        let outcome = result.as_ref().map(|_| ());
        metrics::write(path, &job, Some(&wh), Some(&report), outcome).await;
    }
    wh.close().await;
    result?;
    print!("{}", report::run_summary(&report));
    Ok(())
}

/// Validates the config, then runs each SQL file with a LIMIT through the real reader, so
/// missing columns and wrong types show up exactly as they would in a run. Writes nothing.
async fn check(a: CheckArgs) -> Result<(), Error> {
    let job = config::load(&a.config)?;
    println!(
        "config {}: valid ({} job {:?})",
        a.config.display(),
        job.kind.tag().name(),
        job.name
    );
    // Read-only: `check` writes nothing, not even a missing SQLite file.
    let url = job.warehouse.expose();
    tracing::info!(warehouse = %redact(url), job = %job.name, "connecting read-only");
    let wh = Warehouse::connect_read_only(url).await?;
    let as_of = as_of(a.as_of);
    let mut files = vec![(&job.input.train_sql, job.input.columns.clone())];
    match &job.kind {
        config::JobKind::Score { score_sql, .. } => {
            files.push((score_sql, pipeline::read::scoring_contract(&job)))
        }
        config::JobKind::Forecast {
            future_sql: Some(sql),
            time,
            ..
        } => files.push((
            sql,
            pipeline::forecast::series::future_contract(&job, time.as_str()),
        )),
        config::JobKind::Forecast { .. } => {}
    }
    if let Some(labels) = &job.input.labels {
        files.push((&labels.sql, pipeline::read::labels_contract(&job)));
    }
    let binds = pipeline::read::params(as_of, pipeline::Shard::ALL);
    let mut failed = None;
    for (sql, contract) in files {
        let path = &sql.path;
        let file = path.display().to_string();
        // The same refusals as a run, from the same functions: a repeated column, SQL that
        // writes.
        let returned = wh
            .describe(&sql.text, &file, &binds)
            .await
            .and_then(|cols| {
                crate::warehouse::unique_declared(cols.iter().map(|(n, _)| n.as_str()), &contract)?;
                Ok(cols)
            });
        let limited = format!(
            "SELECT * FROM ({}) AS prescore_check LIMIT {}",
            params::trim_statement(&sql.text),
            a.limit
        );
        let read = match returned {
            Ok(cols) => {
                let extra: Vec<&str> = cols
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| !contract.contains_key(*n))
                    .collect();
                if !extra.is_empty() {
                    println!(
                        "  {}: note: columns not in the contract are ignored: {}",
                        path.display(),
                        extra.join(", ")
                    );
                }
                wh.read_frame(&limited, &file, &binds, &contract).await
            }
            Err(e) => Err(e),
        };
        match read {
            Ok(df) => println!(
                "  {}: ok, returns the {} contract columns ({} sample rows read)",
                path.display(),
                contract.len(),
                df.height()
            ),
            Err(e) => {
                println!("  {}: FAILED: {e}", path.display());
                failed.get_or_insert(e);
            }
        }
    }
    wh.close().await;
    match failed {
        Some(e) => Err(e.into()),
        None => {
            println!("check passed: nothing was written");
            Ok(())
        }
    }
}

async fn runs(a: RunsArgs) -> Result<(), Error> {
    let (wh, job) = connect_target(&a.target).await?;
    wh.migrate().await?;
    let name = a.job.or(job.map(|j| j.name));
    let rows = ledger::recent(&wh, name.as_deref(), a.limit).await?;
    let shown = [
        "run_id",
        "job",
        "status",
        "as_of",
        "started_at",
        "rows_read",
        "rows_scored",
        "rows_written",
        "model_version",
        "error",
    ];
    let idx: Vec<usize> = shown
        .iter()
        .map(|s| {
            ledger::COLUMNS
                .iter()
                .position(|c| c == s)
                .expect("known column")
        })
        .collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            idx.iter()
                .map(|&i| {
                    let v = r[i]
                        .as_ts()
                        .filter(|_| matches!(ledger::COLUMNS[i], "as_of" | "started_at"))
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| r[i].display());
                    if ledger::COLUMNS[i] == "error" && v.chars().count() > 70 {
                        format!("{}…", v.chars().take(70).collect::<String>())
                    } else {
                        v
                    }
                })
                .collect()
        })
        .collect();
    if body.is_empty() {
        println!("no runs recorded yet");
    } else {
        println!("{}", report::table(&shown, &body));
    }
    if let Some(job) = &name {
        let ids: Vec<String> = rows.iter().map(|r| r[0].display()).collect();
        for g in ledger::groups_of(&wh, job, &ids).await? {
            println!("group {}: {}", g.group, g.summary());
        }
    }
    wh.close().await;
    Ok(())
}

/// Exit 0 only when every shard of the group succeeded.
async fn status(a: StatusArgs) -> Result<(), Error> {
    let job = config::load(&a.config)?;
    let wh = connect(&job).await?;
    wh.migrate().await?;
    let group = match (a.run_group, a.as_of) {
        (Some(g), _) => g,
        (None, Some(t)) => ledger::group_of(t),
        (None, None) => unreachable!("clap requires --as-of or --run-group"),
    };
    let found = ledger::group_status(&wh, &job.name, &group).await;
    wh.close().await;
    match found? {
        None => Err(Error::Incomplete(format!(
            "job {}: no run of group {group} is recorded",
            job.name
        ))),
        Some(s) if s.complete() => {
            println!("job {}, group {group}: {}", job.name, s.summary());
            Ok(())
        }
        Some(s) => Err(Error::Incomplete(format!(
            "job {}, group {group}: {}",
            job.name,
            s.summary()
        ))),
    }
}

async fn models(a: ModelsArgs) -> Result<(), Error> {
    let path = a.config.ok_or_else(|| {
        Error::Usage("prescore models needs --config FILE (the job whose models to show)".into())
    })?;
    let job = config::load(&path)?;
    let wh = connect(&job).await?;
    wh.migrate().await?;
    let r = models_action(&wh, &job, &a.action, &path).await;
    wh.close().await;
    r
}

async fn models_action(
    wh: &Warehouse,
    job: &Job,
    action: &ModelsAction,
    path: &Path,
) -> Result<(), Error> {
    match action {
        ModelsAction::List => {
            let list = registry::list(wh, &job.name).await?;
            if list.is_empty() {
                println!(
                    "no models for job {} yet: run `prescore run --config {}`",
                    job.name,
                    path.display()
                );
                return Ok(());
            }
            let primary = crate::model::metrics::primary(job.model.task);
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|m| {
                    vec![
                        format!("v{}", m.version),
                        if m.pruned {
                            format!("{} (pruned)", m.status)
                        } else {
                            m.status.clone()
                        },
                        m.algorithm.clone(),
                        m.trained_at
                            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                            .unwrap_or_default(),
                        m.metrics
                            .get(primary)
                            .map(|v| format!("{v:.4}"))
                            .unwrap_or_default(),
                        m.baseline
                            .get(primary)
                            .map(|v| format!("{v:.4}"))
                            .unwrap_or_default(),
                        m.status_reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let base = format!("baseline {primary}");
            println!(
                "{}",
                report::table(
                    &[
                        "version",
                        "status",
                        "algorithm",
                        "trained_at",
                        primary,
                        &base,
                        "why"
                    ],
                    &rows
                )
            );
        }
        ModelsAction::Show { version } => {
            let m = registry::get(wh, &job.name, *version).await?;
            println!("model {} v{}", job.name, m.version);
            println!(
                "  status        {} ({})",
                m.status,
                m.status_reason.unwrap_or_default()
            );
            println!("  algorithm     {} ({})", m.algorithm, m.task);
            println!("  params        {}", m.params);
            println!(
                "  trained_at    {}",
                m.trained_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
            println!(
                "  as_of         {}",
                m.as_of.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
            println!(
                "  rows          {} train, {} holdout",
                m.rows_train, m.rows_holdout
            );
            println!("  feature_hash  {}", m.feature_hash);
            println!("  features      {}", m.features);
            println!(
                "  metrics       {}",
                serde_json::to_string(&m.metrics).unwrap_or_default()
            );
            println!(
                "  baseline      {}",
                serde_json::to_string(&m.baseline).unwrap_or_default()
            );
            if let Some(i) = m.importances {
                println!("  importances   {i}");
            }
            print_history(wh, &job.name, *version).await?;
        }
        ModelsAction::Promote { version } => {
            registry::promote(wh, &job.name, *version).await?;
            println!(
                "v{version} is now the champion of {}; the next run scores with it",
                job.name
            );
        }
        ModelsAction::Rollback => {
            let (from, to) = registry::rollback(wh, &job.name).await?;
            println!(
                "rolled back {} from v{from} to v{to}; the next run scores with v{to}",
                job.name
            );
        }
    }
    Ok(())
}

/// `models show V`: the model's events, oldest first.
async fn print_history(wh: &Warehouse, job: &str, version: i64) -> Result<(), Error> {
    let events = registry::events::history(wh, job, Some(version)).await?;
    println!("  history");
    if events.is_empty() {
        println!("    (none recorded: the model predates prescore_model_events)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .into_iter()
        .map(|e| {
            vec![
                e.at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                e.event,
                e.command,
                e.run_id.unwrap_or_else(|| "by hand".into()),
                e.reason.unwrap_or_default(),
            ]
        })
        .collect();
    let table = report::table(&["at", "event", "command", "run", "reason"], &rows);
    for line in table.lines() {
        println!("    {line}");
    }
    Ok(())
}
