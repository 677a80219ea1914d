//! The `command` primitive: runs a program per record, without a shell,
//! and takes its standard output as the enrichment.
//!
//! The program gets the rendered arguments as separate argv entries (a
//! record's value can never become shell syntax), an environment of `PATH`
//! and the enricher's `env` only (the daemon's own variables, which may hold
//! secrets such as `NATS_TOKEN`, are not inherited), no standard input, and
//! is killed when its timeout passes. Standard output is read up to
//! `max_output_bytes`; a non-zero exit is an error quoting the start of
//! standard error.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::config::OutputKind;
use super::template::Template;

/// Most bytes of standard error quoted in an error.
const STDERR_QUOTE: usize = 200;

/// A compiled `command` enricher.
pub(crate) struct CommandEnricher {
    pub argv: Vec<Template>,
    pub env: Vec<(String, Template)>,
    pub output: OutputKind,
    pub max_output_bytes: usize,
}

impl CommandEnricher {
    /// Runs the program for `record`. The caller bounds the time: dropping
    /// the future kills the process.
    pub(crate) async fn call(&self, record: &Value) -> Result<Value, String> {
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|arg| arg.render_plain(record))
            .collect::<Result<_, _>>()?;
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        for (name, value) in &self.env {
            command.env(name, value.render_plain(record)?);
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot run {}: {err}", argv[0]))?;
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let limit = self.max_output_bytes;
        let read_stdout = async {
            let mut out = Vec::new();
            (&mut stdout)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .await
                .map(|_| out)
        };
        // Standard error is read beside standard output; once output
        // overflows, the program is killed (on return) without waiting for it.
        let read_stderr = tokio::spawn(read_stderr_owned(stderr));
        let out = read_stdout
            .await
            .map_err(|err| format!("reading the output of {}: {err}", argv[0]))?;
        if out.len() > limit {
            read_stderr.abort();
            return Err(format!(
                "{} wrote more than max_output_bytes ({limit})",
                argv[0]
            ));
        }
        let err = read_stderr.await.unwrap_or_default();
        let status = child
            .wait()
            .await
            .map_err(|err| format!("waiting for {}: {err}", argv[0]))?;
        if !status.success() {
            let quoted = String::from_utf8_lossy(&err);
            return Err(format!("{} failed ({status}): {}", argv[0], quoted.trim()));
        }
        match self.output {
            OutputKind::Json => serde_json::from_slice(&out)
                .map_err(|err| format!("the output of {} is not JSON: {err}", argv[0])),
            OutputKind::Raw => {
                let text = String::from_utf8(out)
                    .map_err(|_| format!("the output of {} is not UTF-8", argv[0]))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(Value::String(text.to_owned()))
            }
        }
    }
}

/// All of standard error (a program blocked writing it would never exit),
/// its start kept.
async fn read_stderr_owned(mut stderr: tokio::process::ChildStderr) -> Vec<u8> {
    let mut err = Vec::new();
    let _ = (&mut stderr)
        .take(STDERR_QUOTE as u64)
        .read_to_end(&mut err)
        .await;
    let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
    err
}
