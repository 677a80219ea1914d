//! The operator's own HTTP listener: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles started, by controller (`engine`, `ruleset`).
    pub reconciles: IntCounterVec,
    /// Reconciles that failed, by controller.
    pub reconcile_errors: IntCounterVec,
    /// `POST /api/v1/reload` calls to daemon pods.
    pub reload_attempts: IntCounter,
    /// Reloads that a pod refused or failed (not the 409 "stale" answers).
    pub reload_failures: IntCounter,
    /// Rule sets by validity (`valid`, `invalid`).
    pub rule_sets: IntGaugeVec,
    /// 1 while this replica holds the leader lease (or runs without election).
    pub leader: IntGauge,
    /// Per engine (`namespace`, `engine`): 1 while RulesInSync is True.
    pub engine_rules_in_sync: IntGaugeVec,
    /// Per engine: 1 while Degraded is True (a rule set served stale).
    pub engine_degraded: IntGaugeVec,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("rsigma_operator_reconciles_total", "Reconciles started"),
            &["controller"],
        )
        .expect("valid metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "rsigma_operator_reconcile_errors_total",
                "Reconciles that failed",
            ),
            &["controller"],
        )
        .expect("valid metric");
        let reload_attempts = IntCounter::new(
            "rsigma_operator_reload_attempts_total",
            "Reloads requested from daemon pods",
        )
        .expect("valid metric");
        let reload_failures = IntCounter::new(
            "rsigma_operator_reload_failures_total",
            "Reloads a daemon pod failed or refused",
        )
        .expect("valid metric");
        let rule_sets = IntGaugeVec::new(
            Opts::new("rsigma_operator_rule_sets", "SigmaRuleSets by validity"),
            &["state"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "rsigma_operator_leader",
            "1 while this replica runs the controllers",
        )
        .expect("valid metric");
        let engine_rules_in_sync = IntGaugeVec::new(
            Opts::new(
                "rsigma_operator_engine_rules_in_sync",
                "1 while every pod of the engine runs its rules (RulesInSync)",
            ),
            &["namespace", "engine"],
        )
        .expect("valid metric");
        let engine_degraded = IntGaugeVec::new(
            Opts::new(
                "rsigma_operator_engine_degraded",
                "1 while a selected rule set is not served at its current content",
            ),
            &["namespace", "engine"],
        )
        .expect("valid metric");
        for c in [&reconciles, &reconcile_errors] {
            for label in ["engine", "ruleset"] {
                c.with_label_values(&[label]);
            }
        }
        for state in ["valid", "invalid"] {
            rule_sets.with_label_values(&[state]);
        }
        registry
            .register(Box::new(reconciles.clone()))
            .expect("register");
        registry
            .register(Box::new(reconcile_errors.clone()))
            .expect("register");
        registry
            .register(Box::new(reload_attempts.clone()))
            .expect("register");
        registry
            .register(Box::new(reload_failures.clone()))
            .expect("register");
        registry
            .register(Box::new(rule_sets.clone()))
            .expect("register");
        registry
            .register(Box::new(leader.clone()))
            .expect("register");
        for gauges in [&engine_rules_in_sync, &engine_degraded] {
            registry
                .register(Box::new(gauges.clone()))
                .expect("register");
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reload_attempts,
            reload_failures,
            rule_sets,
            leader,
            engine_rules_in_sync,
            engine_degraded,
            ready: AtomicBool::new(false),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("UTF-8 metrics")
    }

    /// Marks the operator ready (connected to the API server).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics.render(),
    )
}

/// The router of the operator's listener.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self::metrics))
        .with_state(metrics)
}

/// Serves [`router`] on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "HTTP listener up (/healthz, /readyz, /metrics)");
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(metrics.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let get = |path: &str| {
            let url = format!("http://{addr}{path}");
            async move {
                let r = reqwest::get(url).await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
        assert_eq!(get("/readyz").await.0, 503);
        metrics.set_ready(true);
        assert_eq!(get("/readyz").await.0, 200);
        metrics.reconciles.with_label_values(&["engine"]).inc();
        metrics.reload_attempts.inc();
        let (status, body) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("rsigma_operator_reconciles_total{controller=\"engine\"} 1"),
            "{body}"
        );
        assert!(body.contains("rsigma_operator_reload_attempts_total 1"));
        assert!(body.contains("rsigma_operator_rule_sets{state=\"invalid\"} 0"));
    }
}
