//! Process exit codes and the error type that carries one.
//!
//! Every command returns `Result<Code, CliError>`: `Ok` carries the exit code of a
//! run that completed (success, or findings with `--fail-on-detection`), `Err`
//! carries a message for stderr together with the exit code to use.

use std::fmt;
use std::process::ExitCode;

/// The exit codes of `rsigma`, as documented in `docs/cli.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 0: the command completed successfully.
    Success,
    /// 1: detections were emitted and `--fail-on-detection` was given.
    Detections,
    /// 2: one or more rules could not be read, parsed or compiled.
    Rules,
    /// 3: bad arguments or configuration, or an I/O failure on the events or output.
    Config,
}

impl Code {
    /// The numeric process exit status for this code.
    pub fn as_u8(self) -> u8 {
        match self {
            Code::Success => 0,
            Code::Detections => 1,
            Code::Rules => 2,
            Code::Config => 3,
        }
    }
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code.as_u8())
    }
}

/// An error that ends a command, with the exit code the process should use.
///
/// `main` prints it on stderr as `error: <source>` (the full context chain) and
/// exits with [`CliError::code`].
#[derive(Debug)]
pub struct CliError {
    /// The exit code to use.
    pub code: Code,
    /// What went wrong; printed with its whole context chain.
    pub source: anyhow::Error,
}

impl CliError {
    /// A bad argument, bad configuration or event/output I/O failure (exit code 3).
    pub fn config(source: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: Code::Config,
            source: source.into(),
        }
    }

    /// Rules that could not be read, parsed or compiled (exit code 2).
    pub fn rules(source: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: Code::Rules,
            source: source.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.source)
    }
}
