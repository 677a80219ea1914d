//! `rsigma`: the command-line interface of the rsigma Sigma detection engine.
//!
//! `main` parses the command line, dispatches to one module per subcommand
//! (see [`commands`]) and maps the outcome to a process exit code (see [`exit`]):
//! 0 success, 1 detections with `--fail-on-detection`, 2 rule errors,
//! 3 bad arguments or configuration.

mod client;
mod commands;
mod config;
mod diag;
mod exit;
mod k8s;
mod options;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::eval::EvalArgs;
use crate::commands::reload::ReloadArgs;
use crate::commands::status::StatusArgs;
use crate::commands::tap::TapArgs;
use crate::commands::validate::ValidateArgs;
use crate::diag::Diagnostics;
use crate::exit::Code;

/// rsigma: evaluate Sigma detection rules against JSON events.
#[derive(Debug, Parser)]
#[command(name = "rsigma", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,

    #[command(subcommand)]
    command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Args)]
struct GlobalOpts {
    /// Print only errors on stderr: no statistics, warnings or informational messages.
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Do not print the end-of-run statistics lines on stderr.
    #[arg(long, global = true)]
    no_stats: bool,
}

/// Top-level command groups.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the detection engine.
    Engine {
        #[command(subcommand)]
        command: EngineCommand,
    },
    /// Work with Sigma rules.
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
    /// Act on a running daemon's configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// Subcommands of `rsigma engine`.
#[derive(Debug, Subcommand)]
enum EngineCommand {
    /// Evaluate JSON events against Sigma rules and print detections as NDJSON.
    Eval(EvalArgs),
    /// Show the status of a running daemon (GET /api/v1/status) as JSON.
    Status(StatusArgs),
    /// Record a bounded window of a running daemon's live events (GET /api/v1/tap) as NDJSON.
    Tap(TapArgs),
    /// Run the long-running daemon: hot reload, health checks, metrics and an HTTP API.
    #[cfg(feature = "daemon")]
    Daemon(Box<commands::daemon::DaemonArgs>),
}

/// Subcommands of `rsigma rule`.
#[derive(Debug, Subcommand)]
enum RuleCommand {
    /// Load and compile rules and report every rule that fails.
    Validate(ValidateArgs),
}

/// Subcommands of `rsigma config`.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Ask a running daemon to reload its rules (POST /api/v1/reload).
    Reload(ReloadArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version print on stdout and succeed; every other
            // parse failure is a usage error, which is exit code 3 (not clap's 2).
            let _ = error.print();
            return if error.use_stderr() {
                Code::Config.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };

    let diag = Diagnostics::new(cli.global.quiet, cli.global.no_stats);
    let result = match &cli.command {
        Command::Engine {
            command: EngineCommand::Eval(args),
        } => commands::eval::run(args, &diag),
        Command::Engine {
            command: EngineCommand::Status(args),
        } => commands::status::run(args, &diag),
        Command::Engine {
            command: EngineCommand::Tap(args),
        } => commands::tap::run(args, &diag),
        #[cfg(feature = "daemon")]
        Command::Engine {
            command: EngineCommand::Daemon(args),
        } => commands::daemon::run(args),
        Command::Rule {
            command: RuleCommand::Validate(args),
        } => commands::validate::run(args, &diag),
        Command::Config {
            command: ConfigCommand::Reload(args),
        } => commands::reload::run(args, &diag),
    };
    match result {
        Ok(code) => code.into(),
        Err(error) => {
            diag.error(&error);
            error.code.into()
        }
    }
}
