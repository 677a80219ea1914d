//! Prometheus metrics of the daemon. Names are stable: see docs/daemon.md.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the daemon exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// Events decoded and evaluated.
    pub events_processed: IntCounter,
    /// Input lines that could not be decoded.
    pub parse_errors: IntCounter,
    /// Detections emitted.
    pub detection_matches: IntCounter,
    /// Detections emitted, per rule.
    pub detection_matches_by_rule: IntCounterVec,
    /// Correlation matches emitted.
    pub correlation_matches: IntCounter,
    /// Correlation matches emitted, per rule.
    pub correlation_matches_by_rule: IntCounterVec,
    /// Rules loaded, by kind.
    pub rules_loaded: IntGaugeVec,
    /// Reloads attempted.
    pub reloads: IntCounter,
    /// Reloads that failed (the previous rules stayed active).
    pub reloads_failed: IntCounter,
    /// File events over unchanged content, which caused no reload.
    pub reloads_unchanged: IntCounter,
    /// Items waiting in each queue.
    pub queue_depth: IntGaugeVec,
    /// Times a producer found its queue full and had to wait.
    pub backpressure: IntCounterVec,
    /// Records written to the dead-letter queue.
    pub dlq_events: IntCounter,
    /// Dead letters the DLQ sink failed to take.
    pub dlq_write_errors: IntCounter,
    /// Failed writes, per sink (name and type).
    pub sink_errors: IntCounterVec,
    /// Time from receiving an event to handing its outputs to the sinks.
    pub processing_latency: Histogram,
    /// Seconds since start.
    pub uptime: IntGauge,
    /// Correlation groups held.
    pub correlation_state_entries: IntGauge,
    /// Correlation groups evicted by the state cap.
    pub correlation_evictions: IntGauge,
    /// State snapshots written.
    pub state_saves: IntCounter,
    /// State snapshots that failed.
    pub state_save_failures: IntCounter,
    /// Seconds until the API certificate expires (negative once expired).
    pub tls_certificate_expiry: IntGauge,
    /// Open connections on the API listener.
    pub tls_active_connections: IntGauge,
    /// Tap sessions open now.
    pub tap_sessions_active: IntGauge,
    /// Tap sessions opened since start.
    pub tap_sessions_total: IntCounter,
    /// Events streamed to tap clients.
    pub tap_events_streamed: IntCounter,
    /// Events dropped from tap sessions (full buffer, or unparseable raw lines in redacting captures).
    pub tap_events_dropped: IntCounter,
    /// Events evaluated, by the logsource routing derived for them.
    pub events_by_logsource: IntCounterVec,
    /// Rules skipped because their logsource cannot apply, summed over events.
    pub routing_skipped_rules: IntCounter,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        }
        fn counter_vec(
            registry: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> IntCounterVec {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        }
        fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        }
        fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        }
        let processing_latency = Histogram::with_opts(
            HistogramOpts::new(
                "rsigma_event_processing_seconds",
                "Time from receiving an event to handing its detections to the sinks",
            )
            .buckets(vec![
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(processing_latency.clone()))
            .expect("unique metric");
        Metrics {
            events_by_logsource: counter_vec(
                &registry,
                "rsigma_events_by_logsource_total",
                "Events evaluated, by the logsource routing derived for them \
                 (e.g. product=windows,service=sysmon,category=process_creation; \
                 unknown, or unrouted with routing off)",
                &["logsource"],
            ),
            routing_skipped_rules: counter(
                &registry,
                "rsigma_routing_skipped_rules_total",
                "Rules not evaluated because their logsource cannot apply to the event, summed over events",
            ),
            events_processed: counter(
                &registry,
                "rsigma_events_processed_total",
                "Events decoded and evaluated",
            ),
            parse_errors: counter(
                &registry,
                "rsigma_parse_errors_total",
                "Input lines that could not be decoded",
            ),
            detection_matches: counter(
                &registry,
                "rsigma_detection_matches_total",
                "Detections emitted",
            ),
            detection_matches_by_rule: counter_vec(
                &registry,
                "rsigma_detection_matches_by_rule_total",
                "Detections emitted, per rule",
                &["rule"],
            ),
            correlation_matches: counter(
                &registry,
                "rsigma_correlation_matches_total",
                "Correlation matches emitted",
            ),
            correlation_matches_by_rule: counter_vec(
                &registry,
                "rsigma_correlation_matches_by_rule_total",
                "Correlation matches emitted, per rule",
                &["rule"],
            ),
            rules_loaded: gauge_vec(
                &registry,
                "rsigma_rules_loaded",
                "Rules loaded, by kind",
                &["kind"],
            ),
            reloads: counter(&registry, "rsigma_reloads_total", "Rule reloads attempted"),
            reloads_failed: counter(
                &registry,
                "rsigma_reloads_failed_total",
                "Rule reloads that failed; the previous rules stayed active",
            ),
            reloads_unchanged: counter(
                &registry,
                "rsigma_reloads_unchanged_total",
                "File events over rules and pipelines whose content did not change (no reload)",
            ),
            queue_depth: gauge_vec(
                &registry,
                "rsigma_queue_depth",
                "Items waiting in each queue",
                &["queue"],
            ),
            backpressure: counter_vec(
                &registry,
                "rsigma_backpressure_total",
                "Times a producer found its queue full and waited",
                &["queue"],
            ),
            dlq_events: counter(
                &registry,
                "rsigma_dlq_events_total",
                "Records written to the dead-letter queue",
            ),
            dlq_write_errors: counter(
                &registry,
                "rsigma_dlq_write_errors_total",
                "Dead letters the dead-letter queue failed to take",
            ),
            sink_errors: counter_vec(
                &registry,
                "rsigma_sink_errors_total",
                "Failed writes, per sink (its name without secrets, and its type)",
                &["sink", "type"],
            ),
            processing_latency,
            uptime: gauge(
                &registry,
                "rsigma_uptime_seconds",
                "Seconds since the daemon started",
            ),
            correlation_state_entries: gauge(
                &registry,
                "rsigma_correlation_state_entries",
                "Correlation groups held in memory",
            ),
            correlation_evictions: gauge(
                &registry,
                "rsigma_correlation_evictions",
                "Correlation groups evicted by the state cap since start",
            ),
            state_saves: counter(
                &registry,
                "rsigma_state_saves_total",
                "Correlation state snapshots written",
            ),
            state_save_failures: counter(
                &registry,
                "rsigma_state_save_failures_total",
                "Correlation state snapshots that failed",
            ),
            // Registered by `register_tls`, only with TLS: on a plaintext
            // daemon an expiry of 0 would read as "expires now" to an alert.
            tls_certificate_expiry: IntGauge::new(
                "rsigma_tls_certificate_expiry_seconds",
                "Seconds until the API certificate expires; negative once expired",
            )
            .expect("valid metric"),
            tls_active_connections: IntGauge::new(
                "rsigma_tls_active_connections",
                "Open connections on the TLS API listener",
            )
            .expect("valid metric"),
            tap_sessions_active: gauge(
                &registry,
                "rsigma_tap_sessions_active",
                "Tap sessions open now",
            ),
            tap_sessions_total: counter(
                &registry,
                "rsigma_tap_sessions_total",
                "Tap sessions opened since start",
            ),
            tap_events_streamed: counter(
                &registry,
                "rsigma_tap_events_streamed_total",
                "Events streamed to tap clients",
            ),
            tap_events_dropped: counter(
                &registry,
                "rsigma_tap_events_dropped_total",
                "Events dropped from tap sessions: full buffer, or unparseable raw lines in redacting captures",
            ),
            registry,
            started: Instant::now(),
        }
    }

    /// Exports the TLS metrics (for a daemon serving TLS).
    pub fn register_tls(&self) {
        for gauge in [&self.tls_certificate_expiry, &self.tls_active_connections] {
            self.registry
                .register(Box::new(gauge.clone()))
                .expect("TLS metrics are registered once");
        }
    }

    /// The registry, for components that register metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs() as i64);
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding of metrics cannot fail");
        String::from_utf8(buffer).expect("metrics are UTF-8")
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
