//! The NATS flags of `rsigma engine daemon` and their environment
//! fallbacks (docs/nats.md).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rsigma_daemon::config::{NatsAuth, NatsConfig, ReplayStart};

use crate::config::NatsSection;

/// Connection, authentication, replay and consumer-group flags for
/// `nats://` inputs and sinks. The authentication methods are mutually
/// exclusive; secrets are best given through their environment variables
/// or files (a flag's value is visible in the process list).
#[derive(Args)]
#[command(next_help_heading = "NATS")]
pub struct NatsArgs {
    /// NATS credentials file (.creds) for JWT + NKey authentication.
    #[arg(long, value_name = "FILE", env = "NATS_CREDS",
          conflicts_with_all = ["nats_token", "nats_user", "nats_nkey"])]
    pub nats_creds: Option<PathBuf>,

    /// NATS authentication token.
    #[arg(long, value_name = "TOKEN", env = "NATS_TOKEN", hide_env_values = true,
          conflicts_with_all = ["nats_user", "nats_nkey"])]
    pub nats_token: Option<String>,

    /// NATS user name (requires --nats-password).
    #[arg(
        long,
        value_name = "USER",
        env = "NATS_USER",
        requires = "nats_password",
        conflicts_with = "nats_nkey"
    )]
    pub nats_user: Option<String>,

    /// NATS password (requires --nats-user).
    #[arg(
        long,
        value_name = "PASS",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,

    /// NATS NKey seed.
    #[arg(long, value_name = "SEED", env = "NATS_NKEY", hide_env_values = true)]
    pub nats_nkey: Option<String>,

    /// TLS client certificate for mutual TLS with NATS (requires --nats-tls-key).
    #[arg(long, value_name = "FILE", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,

    /// TLS client private key for mutual TLS with NATS (requires --nats-tls-cert).
    #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,

    /// PEM CA bundle verifying the NATS server (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Refuse to connect to a NATS server that does not negotiate TLS.
    #[arg(long)]
    pub nats_require_tls: bool,

    /// Replay from a specific JetStream sequence number.
    #[arg(long, value_name = "SEQ", group = "replay")]
    pub replay_from_sequence: Option<u64>,

    /// Replay from a wall-clock time (RFC 3339: 2026-05-15T10:00:00Z).
    #[arg(long, value_name = "TIMESTAMP", group = "replay")]
    pub replay_from_time: Option<String>,

    /// Start from the last message in the stream, then deliver new ones.
    #[arg(long, group = "replay")]
    pub replay_from_latest: bool,

    /// Consumer group: daemons sharing it share one durable consumer and split the stream.
    #[arg(long, value_name = "NAME", env = "RSIGMA_CONSUMER_GROUP")]
    pub consumer_group: Option<String>,

    /// Seconds JetStream waits for an acknowledgement before redelivering. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub nats_ack_wait: Option<u64>,
}

/// Prints which secrets are set, never their values.
impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |value: &Option<String>| value.as_ref().map(|_| "***");
        f.debug_struct("NatsArgs")
            .field("nats_creds", &self.nats_creds)
            .field("nats_token", &set(&self.nats_token))
            .field("nats_user", &self.nats_user)
            .field("nats_password", &set(&self.nats_password))
            .field("nats_nkey", &set(&self.nats_nkey))
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_require_tls", &self.nats_require_tls)
            .field("replay_from_sequence", &self.replay_from_sequence)
            .field("replay_from_time", &self.replay_from_time)
            .field("replay_from_latest", &self.replay_from_latest)
            .field("consumer_group", &self.consumer_group)
            .field("nats_ack_wait", &self.nats_ack_wait)
            .finish()
    }
}

impl NatsArgs {
    /// The daemon's NATS settings: the flags (and their environment
    /// variables) over the config file's `daemon.nats`.
    pub fn config(&self, file: &NatsSection) -> Result<NatsConfig, String> {
        let defaults = NatsConfig::default();
        for (value, flag, variable) in [
            (&self.nats_token, "--nats-token", "NATS_TOKEN"),
            (&self.nats_password, "--nats-password", "NATS_PASSWORD"),
            (&self.nats_nkey, "--nats-nkey", "NATS_NKEY"),
        ] {
            if value.is_some() && std::env::var_os(variable).is_none() {
                eprintln!(
                    "warning: {flag} on the command line is visible to every user of this \
                     machine (ps); set {variable} instead"
                );
            }
        }
        let auth = match (
            &self.nats_creds,
            &self.nats_token,
            &self.nats_user,
            &self.nats_nkey,
        ) {
            (Some(path), ..) => NatsAuth::Creds(path.clone()),
            (_, Some(token), ..) => NatsAuth::Token(token.clone()),
            (_, _, Some(user), _) => NatsAuth::UserPassword {
                user: user.clone(),
                password: self.nats_password.clone().unwrap_or_default(),
            },
            (_, _, _, Some(seed)) => NatsAuth::NKey(seed.clone()),
            _ => file.creds.clone().map_or(NatsAuth::None, NatsAuth::Creds),
        };
        let client_cert = match (&file.tls_cert, &file.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(
                    "daemon.nats.tls_cert and daemon.nats.tls_key must be set together".into(),
                );
            }
        };
        let client_cert = self
            .nats_tls_cert
            .clone()
            .zip(self.nats_tls_key.clone())
            .or(client_cert);
        let replay = if let Some(sequence) = self.replay_from_sequence {
            if sequence == 0 {
                return Err("--replay-from-sequence starts at 1".into());
            }
            ReplayStart::Sequence(sequence)
        } else if let Some(time) = &self.replay_from_time {
            let parsed = chrono::DateTime::parse_from_rfc3339(time).map_err(|err| {
                format!("invalid --replay-from-time '{time}': {err} (expected RFC 3339, e.g. 2026-05-15T10:00:00Z)")
            })?;
            ReplayStart::Time(parsed.with_timezone(&chrono::Utc))
        } else if self.replay_from_latest {
            ReplayStart::Latest
        } else {
            ReplayStart::Resume
        };
        Ok(NatsConfig {
            auth,
            client_cert,
            ca: self.nats_tls_ca.clone().or_else(|| file.tls_ca.clone()),
            require_tls: self.nats_require_tls || file.require_tls.unwrap_or(false),
            replay,
            consumer_group: self
                .consumer_group
                .clone()
                .or_else(|| file.consumer_group.clone()),
            ack_wait: self
                .nats_ack_wait
                .map(Duration::from_secs)
                .or(file.ack_wait)
                .unwrap_or(defaults.ack_wait),
        })
    }
}
