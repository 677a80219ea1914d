//! The NATS JetStream transport (cargo feature `nats`): connections with
//! their authentication, the streams the daemon reads and writes, the
//! [`source`] (a durable pull consumer, acknowledged after delivery) and the
//! [`sink`] (publishes that wait for their acknowledgement). See docs/nats.md.

pub mod sink;
pub mod source;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::config::{NatsAuth, NatsConfig, NatsTarget, subject_covers};
use crate::context::DaemonContext;

/// How long the first connection may take before startup fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The NATS metrics, registered only when a `nats://` URL is configured.
#[derive(Clone)]
pub struct NatsMetrics {
    /// 1 while the connection to a server is up, per server.
    pub connected: IntGaugeVec,
    /// Messages pulled from the input stream.
    pub received: IntCounter,
    /// Pulled messages that JetStream had delivered before.
    pub redeliveries: IntCounter,
    /// Pulled messages not yet acknowledged.
    pub pending_acks: IntGauge,
    /// Messages acknowledged (`ack`) or handed back for redelivery (`nak`).
    pub settled: IntCounterVec,
    /// Publishes that failed or were not acknowledged, per sink subject.
    pub publish_failures: IntCounterVec,
}

impl NatsMetrics {
    fn register(context: &DaemonContext) -> NatsMetrics {
        let registry = context.metrics.registry();
        fn add<M: prometheus::core::Collector + Clone + 'static>(
            registry: &prometheus::Registry,
            metric: M,
        ) -> M {
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        }
        let opts = Opts::new;
        NatsMetrics {
            connected: add(
                registry,
                IntGaugeVec::new(
                    opts("rsigma_nats_connected", "1 while connected to the server"),
                    &["server"],
                )
                .expect("valid metric"),
            ),
            received: add(
                registry,
                IntCounter::new(
                    "rsigma_nats_messages_received_total",
                    "Messages pulled from the JetStream input",
                )
                .expect("valid metric"),
            ),
            redeliveries: add(
                registry,
                IntCounter::new(
                    "rsigma_nats_redeliveries_total",
                    "Pulled messages that JetStream had delivered before",
                )
                .expect("valid metric"),
            ),
            pending_acks: add(
                registry,
                IntGauge::new(
                    "rsigma_nats_pending_acks",
                    "Pulled messages whose outputs are not yet delivered",
                )
                .expect("valid metric"),
            ),
            settled: add(
                registry,
                IntCounterVec::new(
                    opts(
                        "rsigma_nats_settled_total",
                        "Input messages acknowledged (ack) or handed back for redelivery (nak)",
                    ),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            publish_failures: add(
                registry,
                IntCounterVec::new(
                    opts(
                        "rsigma_nats_publish_failures_total",
                        "Publishes that failed or were not acknowledged by JetStream",
                    ),
                    &["subject"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// One connection per server named by the `nats://` URLs, shared by the
/// source and the sinks on it.
pub struct Clients {
    clients: HashMap<String, async_nats::Client>,
    /// The NATS metrics.
    pub metrics: NatsMetrics,
}

impl Clients {
    /// Connects to every server the configuration names. A server that
    /// cannot be reached, refuses the credentials or has no JetStream is a
    /// startup error (exit 3) naming the server and the method, never a
    /// secret.
    pub async fn connect(context: &Arc<DaemonContext>) -> Result<Clients, String> {
        let metrics = NatsMetrics::register(context);
        let config = &context.config;
        let source_server = match &config.input {
            crate::InputSpec::Nats(target) => Some(target.server.clone()),
            _ => None,
        };
        let mut servers: Vec<&NatsTarget> = config
            .outputs
            .iter()
            .chain(&config.dlq)
            .filter_map(|sink| match sink {
                crate::SinkSpec::Nats(target) => Some(target),
                _ => None,
            })
            .collect();
        if let crate::InputSpec::Nats(target) = &config.input {
            servers.push(target);
        }
        let mut clients = HashMap::new();
        for target in servers {
            if clients.contains_key(&target.server) {
                continue;
            }
            let is_source = source_server.as_deref() == Some(target.server.as_str());
            let client =
                connect(&target.server, &config.nats, context, &metrics, is_source).await?;
            check_jetstream(&target.server, &client).await?;
            clients.insert(target.server.clone(), client);
        }
        Ok(Clients { clients, metrics })
    }

    /// The connection to `server` (one of the configured ones).
    pub fn get(&self, server: &str) -> async_nats::Client {
        self.clients[server].clone()
    }

    /// Flushes every connection: acknowledgements and publishes buffered in
    /// the clients reach the servers before the daemon exits.
    pub async fn flush(&self) {
        for (server, client) in &self.clients {
            if let Err(err) = client.flush().await {
                tracing::warn!(server, error = %err, "flushing the NATS connection failed");
            }
        }
    }
}

async fn connect(
    server: &str,
    config: &NatsConfig,
    context: &Arc<DaemonContext>,
    metrics: &NatsMetrics,
    is_source: bool,
) -> Result<async_nats::Client, String> {
    let refused = |err: &dyn std::fmt::Display| {
        format!(
            "cannot connect to NATS at {server} ({}): {err}",
            config.auth.method()
        )
    };
    let options = connect_options(config)
        .await?
        .event_callback(connection_events(
            server.to_owned(),
            Arc::clone(context),
            metrics.connected.with_label_values(&[server]),
            is_source,
        ));
    let client = options.connect(server).await.map_err(|err| refused(&err))?;
    metrics.connected.with_label_values(&[server]).set(1);
    tracing::info!(server, auth = config.auth.method(), "connected to NATS");
    Ok(client)
}

/// The client options of the daemon's NATS settings: authentication, TLS,
/// the connection timeout. Errors never echo a secret.
pub(crate) async fn connect_options(
    config: &NatsConfig,
) -> Result<async_nats::ConnectOptions, String> {
    let options = match &config.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::Creds(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|err| {
                format!(
                    "cannot read the NATS credentials file {}: {err}",
                    path.display()
                )
            })?,
        NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::NKey(seed) => {
            // The client only reports a bad seed when it signs the nonce;
            // check it here for a clear error that does not echo it.
            nkeys::KeyPair::from_seed(seed)
                .map_err(|_| "the NATS NKey seed is not a valid user seed".to_string())?;
            async_nats::ConnectOptions::with_nkey(seed.clone())
        }
    };
    let mut options = options
        .name("rsigma")
        .connection_timeout(CONNECT_TIMEOUT)
        .require_tls(config.require_tls);
    if let Some((cert, key)) = &config.client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if let Some(ca) = &config.ca {
        options = options.add_root_certificates(ca.clone());
    }
    Ok(options)
}

/// Keeps the connection gauge and, for the source's server, readiness in
/// step with the connection.
fn connection_events(
    server: String,
    context: Arc<DaemonContext>,
    connected: IntGauge,
    is_source: bool,
) -> impl Fn(async_nats::Event) -> std::future::Ready<()> + Send + Sync + 'static {
    move |event| {
        let up = match event {
            async_nats::Event::Connected => {
                tracing::info!(server = %server, "NATS connection up");
                true
            }
            async_nats::Event::Disconnected => {
                tracing::warn!(server = %server, "NATS connection lost; reconnecting");
                false
            }
            async_nats::Event::Closed => {
                tracing::info!(server = %server, "NATS connection closed");
                false
            }
            other => {
                tracing::debug!(server = %server, event = %other, "NATS event");
                return std::future::ready(());
            }
        };
        connected.set(i64::from(up));
        if is_source {
            context.set_source_connected(up);
        }
        std::future::ready(())
    }
}

/// A server without JetStream answers no JetStream API request: say so
/// instead of timing out later on the first stream lookup. (The raw
/// `$JS.API.INFO` request, because the client's typed account query does
/// not parse the answers of every server version.)
async fn check_jetstream(server: &str, client: &async_nats::Client) -> Result<(), String> {
    let no_jetstream = |detail: String| {
        format!(
            "the NATS server at {server} has no JetStream available ({detail}); \
             start nats-server with -js (or enable JetStream for this account)"
        )
    };
    let answer = client
        .request("$JS.API.INFO", bytes::Bytes::new())
        .await
        .map_err(|err| no_jetstream(err.to_string()))?;
    let info: serde_json::Value = serde_json::from_slice(&answer.payload)
        .map_err(|err| no_jetstream(format!("unreadable answer: {err}")))?;
    match info.get("error") {
        Some(error) => Err(no_jetstream(
            error
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("error")
                .to_owned(),
        )),
        None => Ok(()),
    }
}

/// Finds the stream holding `subject`, or creates one for it. A stream
/// whose subjects overlap the subject without covering it is a conflict
/// the daemon cannot resolve: an error naming the stream.
pub async fn ensure_stream(
    js: &jetstream::Context,
    target: &NatsTarget,
) -> Result<jetstream::stream::Stream, String> {
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    let subject = &target.subject;
    match js.stream_by_subject(subject.clone()).await {
        Ok(name) => {
            let stream = js
                .get_stream(&name)
                .await
                .map_err(|err| format!("{target}: reading stream {name} failed: {err}"))?;
            let subjects = &stream.cached_info().config.subjects;
            if !subjects.iter().any(|held| subject_covers(held, subject)) {
                return Err(format!(
                    "{target}: the existing stream {name} holds the subjects {subjects:?}, \
                     which overlap '{subject}' without covering it; use a subject inside \
                     one of them or change the stream"
                ));
            }
            Ok(stream)
        }
        Err(err) if err.kind() == GetStreamByNameErrorKind::NotFound => {
            let name = stream_name(subject);
            let config = jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            };
            let stream = js
                .create_stream(config)
                .await
                .map_err(|err| format!("{target}: creating stream {name} failed: {err}"))?;
            tracing::info!(stream = %name, subject = %subject, "created JetStream stream");
            Ok(stream)
        }
        Err(err) => Err(format!("{target}: looking up its stream failed: {err}")),
    }
}

/// The name of a stream the daemon creates for `subject`:
/// `RSIGMA_EVENTS_ALL` for `events.>`.
pub fn stream_name(subject: &str) -> String {
    format!("RSIGMA_{}", name_part(subject).to_ascii_uppercase())
}

/// A subject as part of a stream or consumer name (which may not hold `.`,
/// `*`, `>` or whitespace).
pub fn name_part(subject: &str) -> String {
    subject
        .split('.')
        .map(|token| match token {
            "*" => "any".to_owned(),
            ">" => "all".to_owned(),
            token => token
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        })
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_subjects() {
        assert!(subject_covers("events.>", "events.>"));
        assert!(subject_covers("events.>", "events.windows"));
        assert!(subject_covers("events.>", "events.*.security"));
        assert!(subject_covers(">", "events"));
        assert!(subject_covers("events.*", "events.windows"));
        assert!(subject_covers("events.*", "events.*"));
        assert!(subject_covers("events", "events"));
        assert!(!subject_covers("events.*", "events.>"));
        assert!(!subject_covers("events.*", "events.a.b"));
        assert!(!subject_covers("events.windows", "events.*"));
        assert!(!subject_covers("events.>", "events"));
        assert!(!subject_covers("events", "events.windows"));
        assert!(!subject_covers("logs.>", "events.windows"));
    }

    #[test]
    fn names_from_subjects() {
        assert_eq!(stream_name("events.>"), "RSIGMA_EVENTS_ALL");
        assert_eq!(stream_name("a.*.c"), "RSIGMA_A_ANY_C");
        assert_eq!(name_part("detections"), "detections");
        assert_eq!(name_part("x$y.z"), "x_y_z");
    }
}
