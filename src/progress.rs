//! Progress for a person at a terminal: while a stage runs (read, train and its backtest,
//! score, publish) a spinner on stderr shows its name and elapsed time, and is cleared when
//! the stage ends. It is on only when `main` turns it on: stderr is a terminal, the logs are
//! text and not `--quiet`. Elsewhere (cron mail, `--log-format json`, a pipe) nothing extra is
//! written. Log lines go through [`LogWriter`], which hides the spinner while a line is printed.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static BARS: OnceLock<MultiProgress> = OnceLock::new();
/// The running stage's name and spinner (stages run one at a time).
static CURRENT: Mutex<Option<(String, ProgressBar)>> = Mutex::new(None);

/// Turns progress on for this process (once, from `main`).
pub fn enable() {
    let _ = BARS.set(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
}

/// Whether progress should be shown: stderr is a terminal that can redraw, logs are text.
pub fn wanted(json_logs: bool, quiet: bool) -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && !json_logs
        && !quiet
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// A running stage's spinner; dropping it clears it.
pub struct Stage(Option<ProgressBar>);

/// Starts a spinner for `name` (nothing when progress is off).
pub fn stage(name: &str) -> Stage {
    let Some(bars) = BARS.get() else {
        return Stage(None);
    };
    let bar = bars.add(ProgressBar::new_spinner());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    if let Ok(mut current) = CURRENT.lock() {
        *current = Some((name.to_string(), bar.clone()));
    }
    Stage(Some(bar))
}

/// Names the step the running stage is at (`train: backtest`), when progress is on.
pub fn step(step: &str) {
    if let Ok(current) = CURRENT.lock() {
        if let Some((name, bar)) = current.as_ref() {
            bar.set_message(format!("{name}: {step}"));
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            if let Ok(mut current) = CURRENT.lock() {
                *current = None;
            }
            bar.finish_and_clear();
            if let Some(bars) = BARS.get() {
                bars.remove(&bar);
            }
        }
    }
}

/// Writes log lines to stderr, with the spinner hidden while a line is written.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
