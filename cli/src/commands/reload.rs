//! `rsigma config reload`: ask a running daemon to reload its rules.
//!
//! Sends `POST {base}/api/v1/reload` (with `?expected_hash=HASH` for
//! `--expected-hash`) and prints the JSON answer, pretty, on stdout. The daemon
//! accepts the request (202) and reloads in the background; the outcome shows up
//! later as `last_reload` in its status. A 409 (the rules on disk do not have the
//! expected hash), any other non-2xx answer, an unreachable daemon or a body that
//! is not JSON is exit code 3.
//!
//! With `--wait`, the status is read before the request, then polled every
//! 200 ms until `last_reload.at` changes (at most `--timeout`, default 30s); the
//! new `last_reload` object is printed as a second JSON document, and the exit
//! code is 0 when `last_reload.ok` is true, 3 (with `last_reload.error`) otherwise.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use serde_json::Value;

use crate::client::{ClientArgs, DaemonClient, parse_duration, print_json};
use crate::diag::Diagnostics;
use crate::exit::{CliError, Code};

/// How often `--wait` polls the daemon's status.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Arguments of `rsigma config reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Reload only if the rules on disk have this SHA-256 hash (the daemon answers 409 otherwise).
    #[arg(long, value_name = "HASH")]
    pub expected_hash: Option<String>,

    /// Wait until the reload has finished; exit 0 if it succeeded, 3 if it failed.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up after this long (e.g. 10s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, requires = "wait")]
    pub timeout: Duration,
}

/// Runs `rsigma config reload`.
pub fn run(args: &ReloadArgs, _diag: &Diagnostics) -> Result<Code, CliError> {
    let client = DaemonClient::new(&args.client)?;
    let before = if args.wait {
        Some(last_reload_at(&client.status()?))
    } else {
        None
    };
    let answer = client.reload(args.expected_hash.as_deref())?;
    print_json(&answer)?;
    match before {
        Some(before) => wait_for_reload(&client, &before, args.timeout),
        None => Ok(Code::Success),
    }
}

/// `last_reload.at` of a status object (`null` when there was no reload yet).
fn last_reload_at(status: &Value) -> Value {
    status
        .pointer("/last_reload/at")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls the status until `last_reload.at` differs from `before`, prints the new
/// `last_reload` and turns its `ok` into the exit code.
fn wait_for_reload(
    client: &DaemonClient,
    before: &Value,
    timeout: Duration,
) -> Result<Code, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        std::thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
        // The daemon may be briefly busy; keep polling until the deadline and
        // report the last failure if it never answers.
        let last_error = match client.status() {
            Ok(status) => {
                let at = last_reload_at(&status);
                if !at.is_null() && at != *before {
                    let last_reload = status.get("last_reload").cloned().unwrap_or(Value::Null);
                    print_json(&last_reload)?;
                    return outcome(&last_reload);
                }
                None
            }
            Err(err) => Some(err),
        };
        if Instant::now() >= deadline {
            let waited = humantime::format_duration(timeout);
            return Err(CliError::config(match last_error {
                Some(err) => anyhow!(
                    "timed out after {waited} waiting for the reload to finish; last error: {err}"
                ),
                None => anyhow!(
                    "timed out after {waited} waiting for the reload to finish (last_reload.at of {} did not change)",
                    client.describe()
                ),
            }));
        }
    }
}

/// Exit code 0 when `last_reload.ok` is true, else an error with `last_reload.error`.
fn outcome(last_reload: &Value) -> Result<Code, CliError> {
    if last_reload.get("ok") == Some(&Value::Bool(true)) {
        return Ok(Code::Success);
    }
    let error = match last_reload.get("error") {
        Some(Value::String(error)) => error.clone(),
        Some(Value::Null) | None => "no error message".to_owned(),
        Some(other) => other.to_string(),
    };
    Err(CliError::config(anyhow!("the reload failed: {error}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reload_at_of_status() {
        assert_eq!(last_reload_at(&json!({})), Value::Null);
        assert_eq!(last_reload_at(&json!({"last_reload": null})), Value::Null);
        assert_eq!(
            last_reload_at(&json!({"last_reload": {"at": "2024-01-01T00:00:00Z"}})),
            json!("2024-01-01T00:00:00Z")
        );
    }

    #[test]
    fn outcome_of_last_reload() {
        assert_eq!(outcome(&json!({"ok": true})).unwrap(), Code::Success);
        let err = outcome(&json!({"ok": false, "error": "rule x: bad"})).unwrap_err();
        assert_eq!(err.code, Code::Config);
        assert_eq!(err.to_string(), "the reload failed: rule x: bad");
        let err = outcome(&json!({"ok": false, "error": null})).unwrap_err();
        assert_eq!(err.to_string(), "the reload failed: no error message");
    }
}
