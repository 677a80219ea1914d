//! The HTTP API: health, readiness, metrics, status, rules, reload, and the
//! HTTP event source.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::context::{DaemonContext, ReloadRecord, ReloadTrigger};
use crate::ruleset::RuleCounts;
use crate::source::{InputLine, check_line, payload_lines, submit};
use crate::tap::{Stage, TapError, TapRequest, TapStream, parse_redact_fields};

/// Largest accepted `POST /api/v1/events` (and `/v1/logs`) body.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The router of every endpoint.
pub fn router(context: Arc<DaemonContext>) -> Router {
    #[cfg(feature = "otlp")]
    let otlp = crate::otlp::router(Arc::clone(&context));
    #[cfg(not(feature = "otlp"))]
    let otlp = Router::new();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/events", post(events))
        .route("/api/v1/tap", get(tap))
        .with_state(context)
        .merge(otlp)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(context): State<Arc<DaemonContext>>) -> Response {
    let reason = if !context.is_ready() {
        context
            .last_reload()
            .and_then(|r| r.error)
            .unwrap_or_else(|| "rules not loaded".into())
    } else if !context.is_source_connected() {
        format!("the source {} is disconnected", context.config.input)
    } else {
        return (StatusCode::OK, "ready").into_response();
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {reason}"),
    )
        .into_response()
}

async fn metrics(State(context): State<Arc<DaemonContext>>) -> Response {
    if let Some(tls) = &context.tls {
        let metrics = &context.metrics;
        metrics.tls_certificate_expiry.set(tls.seconds_to_expiry());
        metrics
            .tls_active_connections
            .set(context.server.connection_count() as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        context.metrics.render(),
    )
        .into_response()
}

/// The body of `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The daemon's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Whether the last load succeeded.
    pub ready: bool,
    /// The event source.
    pub input: String,
    /// Rules of the active set.
    pub rules: RuleCounts,
    /// Content hash of the active rule files.
    pub rules_hash: String,
    /// When the active rules were loaded (RFC 3339).
    pub rules_loaded_at: String,
    /// The last reload, if any.
    pub last_reload: Option<ReloadRecord>,
    /// Events evaluated.
    pub events_processed: u64,
    /// Input lines that could not be decoded.
    pub parse_errors: u64,
    /// Detections emitted.
    pub detection_matches: u64,
    /// Correlation matches emitted.
    pub correlation_matches: u64,
}

async fn status(State(context): State<Arc<DaemonContext>>) -> axum::Json<Status> {
    let ruleset = context.ruleset.load();
    let metrics = &context.metrics;
    axum::Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: metrics.uptime_secs(),
        ready: context.is_ready(),
        input: context.config.input.to_string(),
        rules: ruleset.counts,
        rules_hash: ruleset.digest.clone(),
        rules_loaded_at: ruleset.loaded_at.to_rfc3339(),
        last_reload: context.last_reload(),
        events_processed: metrics.events_processed.get(),
        parse_errors: metrics.parse_errors.get(),
        detection_matches: metrics.detection_matches.get(),
        correlation_matches: metrics.correlation_matches.get(),
    })
}

async fn rules(State(context): State<Arc<DaemonContext>>) -> Response {
    let ruleset = context.ruleset.load();
    axum::Json(json!({
        "rules_hash": ruleset.digest,
        "rules": ruleset.summaries,
    }))
    .into_response()
}

/// Query of `POST /api/v1/reload`.
#[derive(Debug, Deserialize)]
struct ReloadQuery {
    /// Reload only when the rule files on disk have this content hash.
    expected_hash: Option<String>,
}

async fn reload(
    State(context): State<Arc<DaemonContext>>,
    Query(query): Query<ReloadQuery>,
) -> Response {
    if let Some(expected) = query.expected_hash {
        let rules = context.config.rules.clone();
        let on_disk =
            tokio::task::spawn_blocking(move || rsigma_engine::parser::rules_digest(&rules))
                .await
                .map_err(|err| err.to_string())
                .and_then(|digest| digest);
        match on_disk {
            Ok(on_disk) if on_disk != expected => {
                // The kubelet has not refreshed the mounted files yet.
                return (
                    StatusCode::CONFLICT,
                    axum::Json(json!({
                        "status": "stale",
                        "expected_hash": expected,
                        "disk_hash": on_disk,
                    })),
                )
                    .into_response();
            }
            Ok(_) => {}
            Err(err) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"status": "error", "error": err})),
                )
                    .into_response();
            }
        }
    }
    if context.reload_requests.send(ReloadTrigger::Api).is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "status": "accepted",
            "rules_hash": context.ruleset.load().digest,
        })),
    )
        .into_response()
}

async fn events(State(context): State<Arc<DaemonContext>>, body: Bytes) -> Response {
    if context.config.input != crate::config::InputSpec::Http {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "HTTP input is not enabled (start with --input http)"})),
        )
            .into_response();
    }
    let Some(sender) = context.ingest() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "shutting down", "accepted": 0})),
        )
            .into_response();
    };
    // Each line stands alone: one that is not UTF-8 or too long goes to the
    // dead-letter queue, and the lines around it are still evaluated.
    let limit = context.config.max_line_bytes;
    let (mut accepted, mut rejected) = (0_u64, 0_u64);
    let mut errors = Vec::new();
    for (number, line) in payload_lines(&body) {
        match check_line(line, limit) {
            Ok(text) => {
                if !submit(&context, &sender.lines, InputLine::new(text.to_owned())).await {
                    break;
                }
                accepted += 1;
            }
            Err(letter) => {
                rejected += 1;
                context.metrics.parse_errors.inc();
                if errors.len() < MAX_REPORTED_LINE_ERRORS {
                    errors.push(json!({"line": number, "reason": letter.reason}));
                }
                let _ = sender.rejected.send(*letter).await;
            }
        }
    }
    let mut answer = json!({ "accepted": accepted, "rejected": rejected });
    if !errors.is_empty() {
        answer["errors"] = json!(errors);
    }
    let status = if accepted == 0 && rejected > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, axum::Json(answer)).into_response()
}

/// Rejected lines whose reasons an answer lists (all are counted).
const MAX_REPORTED_LINE_ERRORS: usize = 16;

/// Query of `GET /api/v1/tap`.
#[derive(Debug, Deserialize)]
struct TapQuery {
    /// Capture window (humantime); default 30s, capped by the server.
    duration: Option<String>,
    /// Stop after this many events.
    limit: Option<u64>,
    /// `decoded` (default) or `raw`.
    stage: Option<String>,
    /// Comma-separated dotted paths to redact.
    redact_fields: Option<String>,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

async fn tap(State(context): State<Arc<DaemonContext>>, Query(query): Query<TapQuery>) -> Response {
    let duration = match query.duration.as_deref().map(humantime::parse_duration) {
        None => std::time::Duration::from_secs(30),
        Some(Ok(duration)) => duration,
        Some(Err(err)) => return bad_request(format!("invalid duration: {err}")),
    };
    let stage = match query.stage.as_deref() {
        None | Some("decoded") => Stage::Decoded,
        Some("raw") => Stage::Raw,
        Some(other) => {
            return bad_request(format!("invalid stage '{other}': expected decoded or raw"));
        }
    };
    let redact_fields = match query.redact_fields.as_deref().map(parse_redact_fields) {
        None => Vec::new(),
        Some(Ok(paths)) => paths,
        Some(Err(err)) => return bad_request(err),
    };
    let request = TapRequest {
        duration,
        limit: query.limit,
        stage,
        redact_fields,
    };
    let stream = match context.tap.open(request, &context.metrics) {
        Ok(stream) => stream,
        Err(err @ TapError::Disabled) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "error": err.to_string() })),
            )
                .into_response();
        }
        Err(err @ TapError::TooMany(_)) => {
            return (
                StatusCode::CONFLICT,
                axum::Json(json!({ "error": err.to_string() })),
            )
                .into_response();
        }
    };
    let config = &context.config;
    let input = json!({
        "input": config.input.to_string(),
        "format": config.decoder.format.as_str(),
        "jq": match &config.decoder.extract { crate::input::Extract::Jq(q) => Some(q), _ => None },
        "jsonpath": match &config.decoder.extract { crate::input::Extract::JsonPath(p) => Some(p), _ => None },
        "syslog_tz": config.decoder.syslog_tz,
    });
    let body = tap_body(stream, input, Arc::clone(&context));
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// Chunks smaller than this are merged with those buffered behind them
/// (fewer, larger writes when events trickle in); larger ones, a busy
/// worker batch each, go out as they are, without another copy.
const TAP_MERGE_BELOW_BYTES: usize = 16 * 1024;

/// Event lines until the window closes or the limit is reached, then the
/// summary. Dropping the stream (a client that went away) closes the session.
fn tap_body(
    stream: TapStream,
    input: serde_json::Value,
    context: Arc<DaemonContext>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    struct State {
        stream: TapStream,
        input: serde_json::Value,
        context: Arc<DaemonContext>,
        captured: u64,
        done: bool,
    }
    let state = State {
        stream,
        input,
        context,
        captured: 0,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let limit_reached = |state: &State| {
            state
                .stream
                .limit()
                .is_some_and(|limit| state.captured >= limit)
        };
        if !limit_reached(&state) {
            let chunk = if state.stream.is_closed() {
                // After the window: what is still buffered, then the summary.
                state.stream.try_next_chunk()
            } else {
                let deadline = tokio::time::Instant::from_std(state.stream.deadline);
                tokio::select! {
                    chunk = state.stream.next_chunk() => chunk,
                    _ = tokio::time::sleep_until(deadline) => {
                        // No new events once the window is over; the
                        // buffered ones are still delivered.
                        state.stream.close();
                        state.stream.try_next_chunk()
                    }
                }
            };
            if let Some(mut chunk) = chunk {
                while chunk.text.len() < TAP_MERGE_BELOW_BYTES {
                    match state.stream.try_next_chunk() {
                        Some(more) => {
                            chunk.text.push_str(&more.text);
                            chunk.lines += more.lines;
                        }
                        None => break,
                    }
                }
                state.captured += chunk.lines;
                state
                    .context
                    .metrics
                    .tap_events_streamed
                    .inc_by(chunk.lines);
                return Some((Ok(Bytes::from(chunk.text)), state));
            }
        }
        state.done = true;
        state.stream.close();
        let limit_reached = limit_reached(&state);
        let mut summary = crate::tap::summary(
            &state.stream,
            state.captured,
            limit_reached,
            state.input.clone(),
        );
        summary.push('\n');
        Some((Ok(Bytes::from(summary)), state))
    })
}
