//! Progress reports of long runs, on standard error: a line redrawn in place on a terminal,
//! and otherwise (a log file, CI) a plain line at most every few seconds, so that logs stay
//! short but a stalled run is still visible.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Shortest gap between two lines when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A progress counter over a known number of units of work.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
    quiet: bool,
}

impl Progress {
    /// A counter of `total` units; `quiet` silences it (tests, and `--quiet`).
    pub fn new(label: impl Into<String>, total: usize, quiet: bool) -> Self {
        Self {
            label: label.into(),
            total,
            done: 0,
            started: Instant::now(),
            last: None,
            terminal: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Records `units` more units done, with a note on what is running.
    pub fn advance(&mut self, units: usize, note: &str) {
        self.done = (self.done + units).min(self.total);
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let finished = self.done == self.total;
        if !self.terminal && !finished && self.last.is_some_and(|t| now - t < LOG_EVERY) {
            return;
        }
        self.last = Some(now);
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if self.done == 0 {
            String::new()
        } else {
            let left = elapsed * (self.total - self.done) as f64 / self.done as f64;
            format!(", ~{left:.0} s left")
        };
        let pct = 100.0 * self.done as f64 / self.total.max(1) as f64;
        let line = format!(
            "[{}] {pct:5.1}% ({}/{}) {elapsed:.0} s{eta} {note}",
            self.label, self.done, self.total
        );
        let mut err = std::io::stderr().lock();
        // Progress output is best effort: a closed stderr must not stop a measurement.
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        if self.terminal && finished {
            let _ = writeln!(err);
        }
    }

    /// Seconds since the counter was made.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
