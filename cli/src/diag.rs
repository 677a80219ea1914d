//! Diagnostics on stderr: errors, warnings and the end-of-run statistics.
//!
//! Policy (documented in `docs/cli.md`):
//! - errors (`error: ...`) are always printed;
//! - warnings (`warning: ...`, e.g. malformed event lines) and informational
//!   messages are silenced by `--quiet`;
//! - statistics lines are silenced by `--quiet` and by `--no-stats`.
//!
//! Writing to stderr never panics: a closed stderr is ignored.

use std::fmt;
use std::io::{self, Write};

/// Where and whether diagnostics are printed, derived from the global flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Diagnostics {
    quiet: bool,
    no_stats: bool,
}

impl Diagnostics {
    /// Diagnostics for the given `--quiet` and `--no-stats` flags.
    pub fn new(quiet: bool, no_stats: bool) -> Self {
        Diagnostics { quiet, no_stats }
    }

    /// Prints `error: <message>`; never silenced.
    pub fn error(&self, message: impl fmt::Display) {
        line(format_args!("error: {message}"));
    }

    /// Prints `warning: <message>` unless `--quiet`.
    pub fn warning(&self, message: impl fmt::Display) {
        if !self.quiet {
            line(format_args!("warning: {message}"));
        }
    }

    /// Prints a statistics line verbatim unless `--quiet` or `--no-stats`.
    pub fn stats(&self, message: impl fmt::Display) {
        if !self.quiet && !self.no_stats {
            line(format_args!("{message}"));
        }
    }
}

fn line(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    // Diagnostics are best effort: a closed stderr must not abort the run.
    let _ = writeln!(stderr, "{args}");
}
