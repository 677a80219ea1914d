//! Throughput of `rsigma engine daemon` with a JetStream input and output,
//! compared with the HTTP input in the same run.
//!
//! Run with `cargo bench -p rsigma-cli --bench nats_throughput` (release
//! build; needs `nats-server`, and the SigmaHQ corpus beside the checkout
//! or in `RSIGMA_SIGMAHQ_DIR`).
//!
//! The deterministic Windows stream of the engine benchmarks (200,000
//! events) is evaluated against SigmaHQ's `rules/windows` with routing on:
//!
//! 1. published to a JetStream stream first, then one daemon (or two in one
//!    consumer group) started with `--input nats://…/events.>` and
//!    `--output nats://…/detections`; throughput is events over the time
//!    from the daemon's readiness until the consumer has nothing pending
//!    and nothing unacknowledged (every detection published and
//!    acknowledged by JetStream before its event was);
//! 2. the same events posted over HTTP (`--input http`, stdout sink to
//!    /dev/null) in batches of 1,000, until the daemon reports them
//!    processed.

#[path = "../tests/nats_support/mod.rs"]
mod nats_support;

#[path = "support/corpus.rs"]
mod corpus;

#[path = "support/daemon.rs"]
mod daemon;

#[path = "../../daemon/engine/benches/support/windows_events.rs"]
#[allow(dead_code)]
mod windows_events;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use nats_support::NatsServer;

const EVENTS: usize = 200_000;

/// Events per second through JetStream with `daemons` daemons in one group.
fn through_nats(rules: &Path, payloads: &[Vec<u8>], daemons: usize) -> f64 {
    let nats = NatsServer::start();
    let client = nats.client();
    client.create_stream("EVENTS", &["events.>"]);
    client.publish_all("events.windows", payloads);
    let (input, output) = (nats.url("events.>"), nats.url("detections"));
    let started = Instant::now();
    let running: Vec<Child> = (0..daemons)
        .map(|_| {
            daemon::start(
                rules,
                &[
                    "--input",
                    &input,
                    "--output",
                    &output,
                    "--consumer-group",
                    "bench",
                ],
            )
            .0
        })
        .collect();
    let ready = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while client.consumer_backlog("EVENTS", "bench") != (0, 0) {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed() - ready;
    let detections = client.message_count("detections");
    running.into_iter().for_each(daemon::stop);
    println!(
        "  {daemons} daemon(s): {} events, {detections} detections published, {:.2} s",
        payloads.len(),
        elapsed.as_secs_f64()
    );
    payloads.len() as f64 / elapsed.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(rules) = corpus::windows_rules_dir() else {
        eprintln!("nats_throughput: SigmaHQ rules not found (set RSIGMA_SIGMAHQ_DIR); skipping");
        return;
    };
    let lines: Vec<String> = windows_events::generate(0x5167_4D41, EVENTS)
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    let payloads: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
    println!(
        "JetStream in, JetStream out ({} rules dir):",
        rules.display()
    );
    let one = through_nats(&rules, &payloads, 1);
    let two = through_nats(&rules, &payloads, 2);
    let http = daemon::ndjson_over_http(&rules, &lines);
    println!("NATS, one daemon:          {one:>9.0} events/s");
    println!("NATS, two daemons (group): {two:>9.0} events/s");
    println!("HTTP input, one daemon:    {http:>9.0} events/s");
}
