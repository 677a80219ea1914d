//! Load test of `rsigma engine daemon` over HTTP, from a second process.
//!
//! Run with `cargo bench -p rsigma-cli --bench daemon_load` (release build).
//!
//! 1. Baseline: the single-process engine (`engine eval`'s path: parse each
//!    NDJSON line, evaluate) over the same events, one core.
//! 2. The daemon binary is started with the SigmaHQ Windows rules, HTTP input,
//!    `--include-event` and a stdout sink. This process posts the events in
//!    batches from several client threads and reads the daemon's stdout.
//!    Throughput is events divided by the time from the first post until the
//!    daemon reports every event processed. Latency is measured per
//!    detection: each event carries the wall-clock time it was posted, and
//!    the detection (with the event) is timestamped when read back.
//!
//! Everything goes over loopback; request loops are bounded.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsigma_engine::{Engine, load_rules};
use serde_json::Value;

#[path = "support/corpus.rs"]
mod corpus;

#[path = "../../daemon/engine/benches/support/windows_events.rs"]
#[allow(dead_code)]
mod windows_events;

const EVENTS: usize = 200_000;
const BATCH: usize = 1_000;
const CLIENTS: usize = 2;
const PACED_EVENTS: usize = 100_000;
const PACED_BATCH: usize = 50;
const WARM_UP_EVENTS: usize = 20_000;
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

/// CPU seconds (user + system) the process `pid` has used so far.
fn cpu_seconds(pid: u32, ticks_per_sec: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / ticks_per_sec
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Throughput of one round: by wall clock, and per CPU second of the daemon
/// (its own cost, whatever else shares the machine's cores).
#[derive(Clone, Copy)]
struct Round {
    wall: f64,
    per_cpu_second: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(rules) = corpus::windows_rules_dir() else {
        eprintln!("daemon_load: SigmaHQ rules not found (set RSIGMA_SIGMAHQ_DIR); skipping");
        return;
    };
    let lines: Vec<String> = windows_events::generate(0x5167_4D41, EVENTS)
        .into_iter()
        .map(|e| e.to_string())
        .collect();

    // Baseline: one core, parse and evaluate.
    let loaded = load_rules(&rules);
    let (engine, _) = Engine::compile(&loaded.rule_set);
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    // One warm-up pass (lazy regex DFAs, caches), then the measured one.
    for line in &lines[..lines.len() / 10] {
        let event: Value = serde_json::from_str(line).unwrap();
        out.clear();
        engine.evaluate_into(&event, &mut scratch, &mut out);
    }
    let started = Instant::now();
    for line in &lines {
        let event: Value = serde_json::from_str(line).unwrap();
        out.clear();
        engine.evaluate_into(&event, &mut scratch, &mut out);
    }
    let baseline = lines.len() as f64 / started.elapsed().as_secs_f64();
    println!("baseline (single process, parse + evaluate, one core): {baseline:.0} events/s");

    // The daemon.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let batch_size = std::env::var("RSIGMA_LOAD_BATCH_SIZE").unwrap_or_else(|_| "64".into());
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_rsigma"))
        .args([
            "engine",
            "daemon",
            "--input",
            "http",
            "--include-event",
            "--no-watch",
            "--enable-tap",
        ])
        .args(["--api-addr", &format!("127.0.0.1:{port}")])
        .args(["--batch-size", &batch_size, "--buffer-size", "50000"])
        .arg("-r")
        .arg(&rules)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ready = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        client
            .get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    assert!(ready, "the daemon did not become ready");

    // Read detections as they come; record latency per detection.
    let stdout = daemon.stdout.take().unwrap();
    let detections_seen = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&detections_seen);
    let reader = std::thread::spawn(move || {
        let mut latencies = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let read_at = now_ns();
            let record: Value = serde_json::from_str(&line).unwrap();
            if let Some(sent) = record["event"]["load_sent_ns"].as_str() {
                let sent: u128 = sent.parse().unwrap();
                latencies.push(read_at.saturating_sub(sent) as f64 / 1e6);
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        latencies
    });

    let lines = Arc::new(lines);
    // Warm-up (lazy regex automata, allocator, page cache): not measured.
    let warm_up = Arc::new(lines[..WARM_UP_EVENTS].to_vec());
    post_all(&client, &base, &warm_up, None);
    wait_processed(&client, &base, WARM_UP_EVENTS as u64);
    let mut processed = WARM_UP_EVENTS as u64;
    // Phase 1: saturation, in rounds that alternate no tap, a tap client
    // draining every event (on this same 2-core machine), and a tap client
    // reading at most 4 MiB/s (an operator's laptop over a network); the
    // median of each mode is reported, so that drift on this shared machine
    // does not favour one mode.
    let daemon_pid = daemon.id();
    let ticks = clock_ticks();
    let measure = |run: &mut dyn FnMut()| {
        let cpu = cpu_seconds(daemon_pid, ticks);
        let started = Instant::now();
        run();
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(daemon_pid, ticks) - cpu;
        Round {
            wall: lines.len() as f64 / wall,
            per_cpu_second: lines.len() as f64 / cpu,
        }
    };
    let mut none = Vec::new();
    let mut full = Vec::new();
    let mut slow = Vec::new();
    let mut posted = Duration::ZERO;
    for _ in 0..ROUNDS {
        processed += lines.len() as u64;
        none.push(measure(&mut || {
            let started = Instant::now();
            post_all(&client, &base, &lines, None);
            posted = started.elapsed();
            wait_processed(&client, &base, processed);
        }));
        processed += lines.len() as u64;
        full.push(saturate_with_tap(
            &client, &base, &lines, processed, None, &measure,
        ));
        processed += lines.len() as u64 + 1;
        slow.push(saturate_with_tap(
            &client,
            &base,
            &lines,
            processed,
            Some(4 << 20),
            &measure,
        ));
        processed += 1;
    }
    let throughput = median(none.iter().map(|r| r.wall).collect());
    let per_cpu = median(none.iter().map(|r| r.per_cpu_second).collect());
    let elapsed = Duration::from_secs_f64(lines.len() as f64 / throughput);
    let summarize = |rounds: &[(Round, usize, u64)]| {
        (
            median(rounds.iter().map(|r| r.0.wall).collect()),
            median(rounds.iter().map(|r| r.0.per_cpu_second).collect()),
            rounds.iter().map(|r| r.1).sum::<usize>() / ROUNDS,
            rounds.iter().map(|r| r.2).sum::<u64>() / ROUNDS as u64,
        )
    };
    let full_tap = summarize(&full);
    let slow_tap = summarize(&slow);
    println!(
        "rounds without a tap: {:.0?} events/s, {:.0?} events per daemon CPU second",
        none.iter().map(|r| r.wall).collect::<Vec<_>>(),
        none.iter().map(|r| r.per_cpu_second).collect::<Vec<_>>()
    );
    let phase2_base = processed;
    // Let the reader catch up with phase 1's output before phase 2 starts.
    let mut saturated_detections = detections_seen.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = detections_seen.load(Ordering::Relaxed);
        if now == saturated_detections {
            break;
        }
        saturated_detections = now;
    }
    // Phase 2: latency at half the measured capacity (the queue stays short).
    let paced: Arc<Vec<String>> = Arc::new(lines[..PACED_EVENTS].to_vec());
    let rate = throughput / 2.0;
    let paced_started = Instant::now();
    post_all(&client, &base, &paced, Some(rate));
    wait_processed(&client, &base, phase2_base + paced.len() as u64);
    let paced_elapsed = paced_started.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let all = reader.join().unwrap();
    let mut saturated: Vec<f64> = all[..saturated_detections.min(all.len())].to_vec();
    let mut latencies: Vec<f64> = all[saturated_detections.min(all.len())..].to_vec();
    saturated.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    println!(
        "daemon over HTTP ({CLIENTS} client threads, {BATCH} events per request, batch-size {batch_size}), \
         median of {ROUNDS}: {throughput:.0} events/s ({:.0}% of baseline); last round posted in {:.2}s, \
         median round evaluated in {:.2}s",
        100.0 * throughput / baseline,
        posted.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  daemon CPU cost without a tap: {per_cpu:.0} events per CPU second");
    for (label, (tapped, tapped_per_cpu, streamed, dropped)) in [
        ("draining every event", full_tap),
        ("reading at most 4 MiB/s", slow_tap),
    ] {
        println!(
            "with one tap session {label}, median of {ROUNDS}: {tapped:.0} events/s ({:+.1}% vs without), \
             {tapped_per_cpu:.0} events per daemon CPU second ({:+.1}% vs without); \
             {streamed} events streamed, {dropped} dropped per round",
            100.0 * (tapped - throughput) / throughput,
            100.0 * (tapped_per_cpu - per_cpu) / per_cpu,
        );
    }
    println!(
        "  latency under saturation (queueing included): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&saturated, 50.0),
        percentile(&saturated, 99.0)
    );
    println!(
        "paced at {rate:.0} events/s for {:.1}s: ingest-to-detection latency over {} detections: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        paced_elapsed.as_secs_f64(),
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
}

/// Posts every line again while one tap session is open; returns the
/// throughput, and the events the tap streamed and dropped (from the metrics).
/// `processed` is the daemon's event count once these lines are evaluated.
fn saturate_with_tap(
    client: &reqwest::blocking::Client,
    base: &str,
    lines: &Arc<Vec<String>>,
    processed: u64,
    max_bytes_per_sec: Option<usize>,
    measure: &dyn Fn(&mut dyn FnMut()) -> Round,
) -> (Round, usize, u64) {
    // A client of its own: a blocking client runs all its requests on one
    // background thread, which the posting clients keep busy.
    let tap_client = reqwest::blocking::Client::new();
    let tap_url = format!("{base}/api/v1/tap?duration=10m");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let tap = std::thread::spawn(move || {
        let response = tap_client
            .get(tap_url)
            .timeout(Duration::from_secs(600))
            .send()
            .expect("open the tap");
        assert!(response.status().is_success(), "tap: {}", response.status());
        // Count lines without parsing them: the client of a real tap runs
        // elsewhere, so its own cost is kept small.
        let mut response = response;
        let mut buffer = vec![0u8; 1 << 20];
        let started = Instant::now();
        let (mut lines, mut bytes) = (0usize, 0usize);
        while !stopping.load(Ordering::Relaxed) {
            let Ok(read) = std::io::Read::read(&mut response, &mut buffer) else {
                break;
            };
            if read == 0 {
                break;
            }
            bytes += read;
            lines += memchr::memchr_iter(b'\n', &buffer[..read]).count();
            if let Some(rate) = max_bytes_per_sec {
                let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        lines
    });
    // The session is open once the metrics say so.
    let sessions_open = || {
        client
            .get(format!("{base}/metrics"))
            .send()
            .and_then(|r| r.text())
            .map(|m| m.lines().any(|l| l == "rsigma_tap_sessions_active 1"))
            .unwrap_or(false)
    };
    for _ in 0..200 {
        if sessions_open() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let dropped_before = metric(client, base, "rsigma_tap_events_dropped_total");
    let round = measure(&mut || {
        post_all(client, base, lines, None);
        wait_processed(client, base, processed);
    });
    let dropped = metric(client, base, "rsigma_tap_events_dropped_total") - dropped_before;
    stop.store(true, Ordering::Relaxed);
    // The reader may be blocked in a read of an idle stream: one more event
    // wakes it up (it does not count towards the measurement).
    client
        .post(format!("{base}/api/v1/events"))
        .body(format!("{}\n", lines[0]))
        .send()
        .expect("post the wake-up event");
    let streamed = tap.join().unwrap();
    // Closing the connection frees the session.
    for _ in 0..200 {
        if !sessions_open() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (round, streamed, dropped)
}

/// The value of an unlabelled metric.
fn metric(client: &reqwest::blocking::Client, base: &str, name: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Posts every line in batches from the client threads; with a rate, paces
/// batches so the average stays at that many events per second.
fn post_all(
    client: &reqwest::blocking::Client,
    base: &str,
    lines: &Arc<Vec<String>>,
    rate: Option<f64>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let batch = if rate.is_some() { PACED_BATCH } else { BATCH };
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let lines = Arc::clone(lines);
            let next = Arc::clone(&next);
            let client = client.clone();
            let base = base.to_owned();
            std::thread::spawn(move || {
                loop {
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    if start >= lines.len() {
                        break;
                    }
                    if let Some(rate) = rate {
                        let due = started + Duration::from_secs_f64(start as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let sent = now_ns().to_string();
                    let mut body = String::with_capacity(batch * 1000);
                    for line in &lines[start..(start + batch).min(lines.len())] {
                        // Stamp the send time into the event (a string field
                        // no rule looks at).
                        body.push_str(&line[..line.len() - 1]);
                        body.push_str(",\"load_sent_ns\":\"");
                        body.push_str(&sent);
                        body.push_str("\"}\n");
                    }
                    let response = client
                        .post(format!("{base}/api/v1/events"))
                        .body(body)
                        .send()
                        .expect("post events");
                    assert!(response.status().is_success());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// Waits (at most 5 minutes) until the daemon reports `count` events processed.
fn wait_processed(client: &reqwest::blocking::Client, base: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status: Value = client
            .get(format!("{base}/api/v1/status"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if status["events_processed"].as_u64() >= Some(count) {
            return;
        }
        assert!(Instant::now() < deadline, "the daemon did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
}
