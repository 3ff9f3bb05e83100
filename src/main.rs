//! The `prescore` binary: parse flags, set up logging, run the subcommand, and exit with the
//! documented code (see `prescore --help` and the README).

use std::process::ExitCode;

use clap::Parser;
use prescore::cli::{Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("prescore: cannot start the async runtime: {e}");
            return ExitCode::from(prescore::error::EXIT_FAILED);
        }
    };
    match runtime.block_on(prescore::app::dispatch(
        cli.command,
        cli.metrics_file.as_deref(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(exit_code = code, "{e}");
            eprintln!("prescore: error: {e}");
            ExitCode::from(code)
        }
    }
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},sqlx=warn")));
    let json = cli.log_format == LogFormat::Json;
    if prescore::progress::wanted(json, cli.quiet) {
        prescore::progress::enable();
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| prescore::progress::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}
