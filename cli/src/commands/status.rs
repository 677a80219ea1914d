//! `rsigma engine status`: show the status of a running daemon.
//!
//! Sends `GET {base}/api/v1/status` to the daemon's HTTP API (address from
//! `--addr`, the config file's `daemon.api.addr`, or `127.0.0.1:9090`) and
//! prints the JSON answer, pretty, on stdout. Exits with 0 on a 2xx answer and
//! with 3 when the daemon cannot be reached, answers non-2xx, or sends a body
//! that is not JSON.

use clap::Args;

use crate::client::{ClientArgs, DaemonClient, print_json};
use crate::diag::Diagnostics;
use crate::exit::{CliError, Code};

/// Arguments of `rsigma engine status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `rsigma engine status`.
pub fn run(args: &StatusArgs, _diag: &Diagnostics) -> Result<Code, CliError> {
    let client = DaemonClient::new(&args.client)?;
    let status = client.status()?;
    print_json(&status)?;
    Ok(Code::Success)
}
