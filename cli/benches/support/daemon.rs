//! The daemon as the throughput benches run it: the real binary on a free
//! loopback port, stopped with SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon on `rules` with `args`, its API on a free port; waits until
/// ready. Returns the process and the API's base URL.
pub fn start(rules: &Path, args: &[&str]) -> (Child, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_rsigma"))
        .args(["engine", "daemon", "--no-watch", "--batch-size", "64", "-r"])
        .arg(rules)
        .args(args)
        .args(["--api-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the daemon");
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the daemon did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, base)
}

/// Waits (up to 10 minutes) until the daemon at `base` has processed `count` events.
pub fn wait_processed(base: &str, count: usize) {
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status: serde_json::Value = http
            .get(format!("{base}/api/v1/status"))
            .send()
            .and_then(|r| r.json())
            .expect("status");
        if status["events_processed"].as_u64() >= Some(count as u64) {
            return;
        }
        assert!(Instant::now() < deadline, "the events were not processed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the daemon with SIGTERM and waits for it.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Events per second over the HTTP input: `lines` posted as NDJSON in
/// batches of 1,000, until the daemon reports them processed.
pub fn ndjson_over_http(rules: &Path, lines: &[String]) -> f64 {
    let (child, base) = start(rules, &["--input", "http"]);
    let http = reqwest::blocking::Client::new();
    let started = Instant::now();
    for batch in lines.chunks(1_000) {
        let body = batch.join("\n");
        let answer = http
            .post(format!("{base}/api/v1/events"))
            .body(body)
            .send()
            .expect("posting");
        assert!(answer.status().is_success());
    }
    wait_processed(&base, lines.len());
    let elapsed = started.elapsed();
    stop(child);
    lines.len() as f64 / elapsed.as_secs_f64()
}
