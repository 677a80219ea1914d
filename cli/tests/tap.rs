//! `rsigma engine tap` against a real `rsigma engine daemon`: the daemon binary
//! is started with `--input http`, events are posted to `/api/v1/events` while
//! a tap (the `rsigma engine tap` binary, or a raw HTTP request) captures them.
//!
//! Every wait is a poll with a deadline; no test sleeps for long.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};

/// The `rsigma` binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_rsigma");

/// How long a daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a condition polled on the daemon may take.
const WAIT: Duration = Duration::from_secs(15);

/// The longest any tap child may run before the test gives up.
const TAP_TIMEOUT: Duration = Duration::from_secs(30);

/// `rsigma` isolated from the environment: working directory `cwd`, `HOME`
/// (and `XDG_CONFIG_HOME`) under `home`, no proxies, no stdin.
fn rsigma(cwd: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    common::isolate(&mut cmd, home)
        .current_dir(cwd)
        .stdin(Stdio::null());
    cmd
}

/// A blocking HTTP client that ignores proxy variables.
fn http(timeout: Duration) -> Client {
    Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("the HTTP client builds")
}

/// Polls `done` every 20 ms until it holds; an error naming `what` after
/// `timeout`.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// How to start a daemon.
#[derive(Default)]
struct Setup<'a> {
    /// `--enable-tap`.
    tap: bool,
    /// Contents of a config file passed with `-c`.
    config: Option<&'a str>,
    /// `--dlq file://<dir>/dlq.ndjson`.
    dlq: bool,
    /// More flags.
    args: &'a [&'a str],
}

/// A running `rsigma engine daemon --input http`, killed on drop.
struct Daemon {
    child: Child,
    /// `127.0.0.1:<port>`.
    addr: String,
    /// Holds `cwd/`, `home/`, the output, the DLQ, the config and the log.
    dir: tempfile::TempDir,
    http: Client,
}

impl Daemon {
    /// Starts a daemon on the sample rules and waits for `/readyz`.
    fn start(setup: Setup<'_>) -> Daemon {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for sub in ["cwd", "home"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        if let Some(config) = setup.config {
            fs::write(dir.path().join("config.yaml"), config).unwrap();
        }
        let http = http(Duration::from_secs(10));
        for _attempt in 0..5 {
            let addr = format!("127.0.0.1:{}", common::free_port());
            let log = fs::File::create(dir.path().join("daemon.log")).unwrap();
            let mut cmd = rsigma(&dir.path().join("cwd"), &dir.path().join("home"));
            cmd.args(["engine", "daemon", "-r"])
                .arg(common::sample_rules())
                .args(["--input", "http", "--api-addr", &addr, "--no-watch"])
                .arg("--output")
                .arg(format!(
                    "file://{}",
                    dir.path().join("out.ndjson").display()
                ))
                .stdout(Stdio::null())
                .stderr(log);
            if setup.tap {
                cmd.arg("--enable-tap");
            }
            if setup.config.is_some() {
                cmd.arg("-c").arg(dir.path().join("config.yaml"));
            }
            if setup.dlq {
                cmd.arg("--dlq").arg(format!(
                    "file://{}",
                    dir.path().join("dlq.ndjson").display()
                ));
            }
            cmd.args(setup.args);
            let mut child = cmd.spawn().expect("the daemon starts");
            let log = || fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
            let deadline = Instant::now() + READY_TIMEOUT;
            let ready = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = log();
                    assert!(
                        log.contains("cannot listen"),
                        "the daemon exited with {status} before it was ready:\n{log}"
                    );
                    break false; // the port was taken meanwhile: try another one
                }
                let ready = http
                    .get(format!("http://{addr}/readyz"))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break true;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the daemon was not ready within {READY_TIMEOUT:?}:\n{}",
                        log()
                    );
                }
                thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return Daemon {
                    child,
                    addr,
                    dir,
                    http,
                };
            }
        }
        panic!("no free port for the daemon after 5 attempts");
    }

    /// `http://<addr><path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The daemon's stderr so far.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Polls `done` until it holds; panics with the daemon's log after [`WAIT`].
    fn wait(&self, what: &str, done: impl FnMut() -> bool) {
        if let Err(message) = wait_for(what, WAIT, done) {
            panic!("{message}; the daemon's log:\n{}", self.log());
        }
    }

    /// The working directory given to tap children.
    fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// A file in the working directory of tap children.
    fn file(&self, name: &str) -> PathBuf {
        self.cwd().join(name)
    }

    /// The value of an unlabelled metric.
    fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("/metrics answers");
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse::<f64>().expect("a number"))
            })
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Waits until `rsigma_tap_sessions_active` is `n`.
    fn wait_sessions(&self, n: u32) {
        self.wait(&format!("{n} active tap sessions"), || {
            self.metric("rsigma_tap_sessions_active") == f64::from(n)
        });
    }

    /// Waits until the workers have processed `n` events.
    fn wait_processed(&self, n: usize) {
        self.wait(&format!("{n} processed events"), || {
            self.metric("rsigma_events_processed_total") >= n as f64
        });
    }

    /// Posts `body` to `/api/v1/events`; all its non-empty lines must be accepted.
    fn post(&self, body: &str) {
        let expected = body.lines().filter(|l| !l.trim().is_empty()).count();
        let answer: Value = self
            .http
            .post(self.url("/api/v1/events"))
            .body(body.to_owned())
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .expect("POST /api/v1/events succeeds");
        assert_eq!(answer["accepted"], json!(expected), "{answer}");
    }

    /// The detection records in the daemon's `--output` file.
    fn detections(&self) -> Vec<Value> {
        let text = fs::read_to_string(self.dir.path().join("out.ndjson")).unwrap_or_default();
        // Only complete lines: the sink may be mid-write.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        common::ndjson(complete.as_bytes())
    }

    /// Waits until the `--output` file holds `n` records, and returns them.
    fn wait_detections(&self, n: usize) -> Vec<Value> {
        self.wait(&format!("{n} detection records"), || {
            self.detections().len() >= n
        });
        // A moment more would reveal surplus records.
        thread::sleep(Duration::from_millis(100));
        self.detections()
    }

    /// The DLQ records.
    fn dead_letters(&self) -> Vec<Value> {
        let text = fs::read_to_string(self.dir.path().join("dlq.ndjson")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `rsigma engine tap --addr <daemon> <args>`, in the daemon's `cwd/`.
    fn tap(&self, args: &[&str]) -> Command {
        let mut cmd = rsigma(&self.cwd(), &self.dir.path().join("home"));
        cmd.args(["engine", "tap", "--addr", &self.addr]).args(args);
        cmd
    }

    /// Starts a tap child with piped stdout and stderr.
    fn spawn_tap(&self, args: &[&str]) -> Running {
        let child = self
            .tap(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tap starts");
        Running {
            child: Some(child),
            started: Instant::now(),
        }
    }

    /// Runs a tap to completion.
    fn run_tap(&self, args: &[&str]) -> Finished {
        self.spawn_tap(args).finish(TAP_TIMEOUT)
    }
}

impl Daemon {
    /// Sends SIGTERM and waits at most `timeout` for the exit.
    fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < timeout,
                "the daemon did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running tap child, killed on drop.
struct Running {
    child: Option<Child>,
    started: Instant,
}

/// A tap child that exited.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    /// From spawning to exit (at the 20 ms polling resolution).
    elapsed: Duration,
}

impl Running {
    /// Whether the child is still running.
    fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not finished");
        child.try_wait().unwrap().is_none()
    }

    /// Reads stdout and stderr to their ends and waits for the exit, at most
    /// `timeout` from now.
    fn finish(mut self, timeout: Duration) -> Finished {
        let mut child = self.child.take().expect("not finished");
        let mut out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        let stdout = thread::spawn(move || {
            let mut bytes = Vec::new();
            out.read_to_end(&mut bytes).map(|_| bytes)
        });
        let stderr = thread::spawn(move || {
            let mut bytes = Vec::new();
            err.read_to_end(&mut bytes).map(|_| bytes)
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.join().unwrap().unwrap_or_default();
                panic!(
                    "the tap did not exit within {timeout:?}; stderr:\n{}",
                    String::from_utf8_lossy(&stderr)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        Finished {
            status,
            stdout: stdout.join().unwrap().expect("stdout is readable"),
            stderr: String::from_utf8(stderr.join().unwrap().expect("stderr is readable"))
                .expect("stderr is UTF-8"),
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Finished {
    /// Asserts exit code 0.
    fn success(&self) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(0),
            "the tap failed; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts exit code `code`.
    fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts stderr contains `text`.
    fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr should contain {text:?}:\n{}",
            self.stderr
        );
        self
    }

    /// `(captured, dropped)` from the statistics line.
    fn stats(&self) -> (u64, u64) {
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("Captured "))
            .unwrap_or_else(|| panic!("no statistics line in:\n{}", self.stderr));
        let words: Vec<&str> = line.split(' ').collect();
        // Captured N events (M dropped) in T from the S stage.
        let captured = words[1].parse().expect("captured is a number");
        let dropped = words[3]
            .trim_start_matches('(')
            .parse()
            .expect("dropped is a number");
        (captured, dropped)
    }
}

/// The lines of a fixture file.
fn fixture_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("the fixture {} is readable: {err}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `value` serialized with every object's keys sorted.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in ordered {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Values as a multiset: canonical text → count.
fn multiset<'a>(values: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(canonical(value)).or_insert(0) += 1;
    }
    counts
}

/// Strings as a sorted list (a multiset).
fn sorted_strings<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    let mut out: Vec<String> = items.iter().map(|s| s.as_ref().to_owned()).collect();
    out.sort();
    out
}

/// The sample events file's text.
fn sample_text() -> String {
    fs::read_to_string(common::sample_events()).unwrap()
}

/// `rsigma engine eval -r <sample rules> -e @<events>`: the detection records.
fn eval(events: &Path) -> Vec<Value> {
    let home = tempfile::tempdir().unwrap();
    let output = rsigma(home.path(), home.path())
        .args(["engine", "eval", "--no-stats", "-r"])
        .arg(common::sample_rules())
        .arg("-e")
        .arg(common::at(events))
        .output()
        .expect("engine eval runs");
    assert!(
        output.status.success(),
        "engine eval failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    common::ndjson(&output.stdout)
}

#[test]
fn a_disabled_tap_exits_3_with_the_503_reason() {
    let daemon = Daemon::start(Setup::default());
    let run = daemon.run_tap(&["--duration", "5s", "-o", "fixture.ndjson"]);
    run.code(3)
        .stderr_has("503 Service Unavailable")
        .stderr_has("tap disabled: start the daemon with --enable-tap");
    assert!(
        !daemon.file("fixture.ndjson").exists(),
        "a refused tap leaves no fixture"
    );
    assert_eq!(daemon.metric("rsigma_tap_sessions_total"), 0.0);
}

#[test]
fn a_decoded_capture_replays_to_the_daemons_detections() {
    let daemon = Daemon::start(Setup {
        tap: true,
        ..Setup::default()
    });
    let tap = daemon.spawn_tap(&["--duration", "30s", "--limit", "20", "-o", "fixture.ndjson"]);
    daemon.wait_sessions(1);
    daemon.post(&sample_text());
    let run = tap.finish(TAP_TIMEOUT);
    run.success()
        .stderr_has("Captured 20 events (0 dropped) in ")
        .stderr_has(" from the decoded stage (limit reached).");
    assert!(run.stdout.is_empty(), "with -o nothing goes to stdout");

    let fixture = daemon.file("fixture.ndjson");
    let lines = fixture_lines(&fixture);
    assert_eq!(lines.len(), 20);
    assert!(
        lines.iter().all(|l| !l.contains("rsigma_tap_summary")),
        "the summary record stays out of the fixture"
    );
    // The capture is exactly the events the engine evaluated.
    let captured = common::ndjson(fs::read_to_string(&fixture).unwrap().as_bytes());
    let sent = common::ndjson(sample_text().as_bytes());
    assert_eq!(multiset(&captured), multiset(&sent));

    // The live daemon's detections equal the replay's.
    let replayed = eval(&fixture);
    assert_eq!(replayed.len(), 14, "the sample fires 14 detections");
    let live = daemon.wait_detections(replayed.len());
    assert_eq!(multiset(&live), multiset(&replayed));
}

/// Input lines for the raw stage: JSON with unusual spacing (kept verbatim),
/// and a line that is not JSON.
const RAW_VALID: [&str; 2] = [
    r#"{"EventID": 1,   "Image":"C:\\Windows\\System32\\whoami.exe" , "n": 1}"#,
    r#"  {"n":2,"note":"two  spaces, \t and \u00e9"}"#,
];
const MALFORMED: &str = "not json at all";

#[test]
fn a_raw_capture_keeps_malformed_lines_verbatim() {
    let daemon = Daemon::start(Setup {
        tap: true,
        args: &["--input-format", "json"],
        ..Setup::default()
    });
    let tap = daemon.spawn_tap(&[
        "--stage",
        "raw",
        "--limit",
        "3",
        "--duration",
        "30s",
        "-o",
        "raw.ndjson",
    ]);
    daemon.wait_sessions(1);
    daemon.post(&format!(
        "{}\n{MALFORMED}\n{}\n",
        RAW_VALID[0], RAW_VALID[1]
    ));
    let run = tap.finish(TAP_TIMEOUT);
    run.success()
        .stderr_has("Captured 3 events (0 dropped) in ")
        .stderr_has(" from the raw stage (limit reached).")
        .stderr_has(
            "Replay with: rsigma engine daemon -r RULES --input stdin --input-format json --api-addr 127.0.0.1:0 < raw.ndjson",
        );
    assert_eq!(
        sorted_strings(&fixture_lines(&daemon.file("raw.ndjson"))),
        sorted_strings(&[RAW_VALID[0], MALFORMED, RAW_VALID[1]])
    );
    daemon.wait_processed(2);
    assert_eq!(daemon.metric("rsigma_parse_errors_total"), 1.0);
}

#[test]
fn with_a_dlq_malformed_lines_go_to_the_dlq_not_the_raw_capture() {
    let daemon = Daemon::start(Setup {
        tap: true,
        dlq: true,
        args: &["--input-format", "json"],
        ..Setup::default()
    });
    let tap = daemon.spawn_tap(&[
        "--stage",
        "raw",
        "--limit",
        "2",
        "--duration",
        "30s",
        "-o",
        "raw.ndjson",
    ]);
    daemon.wait_sessions(1);
    // The malformed line first, fully handled before the valid ones: had the
    // tap taken it, it would be in the capture.
    daemon.post(&format!("{MALFORMED}\n"));
    daemon.wait("the malformed line in the DLQ", || {
        daemon
            .dead_letters()
            .iter()
            .any(|r| r["line"] == json!(MALFORMED))
    });
    daemon.post(&format!("{}\n{}\n", RAW_VALID[0], RAW_VALID[1]));
    let run = tap.finish(TAP_TIMEOUT);
    run.success()
        .stderr_has("Captured 2 events (0 dropped) in ")
        .stderr_has(" (limit reached).");
    assert_eq!(
        sorted_strings(&fixture_lines(&daemon.file("raw.ndjson"))),
        sorted_strings(&RAW_VALID)
    );
    let letters = daemon.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["kind"], "parse_error");
}

#[test]
fn the_limit_ends_the_capture_before_the_duration() {
    let daemon = Daemon::start(Setup {
        tap: true,
        ..Setup::default()
    });
    let tap = daemon.spawn_tap(&["--limit", "3", "--duration", "30s", "-o", "fixture.ndjson"]);
    daemon.wait_sessions(1);
    daemon.post(&sample_text());
    let run = tap.finish(TAP_TIMEOUT);
    run.success()
        .stderr_has("Captured 3 events (0 dropped) in ")
        .stderr_has(" (limit reached).");
    assert!(
        run.elapsed < Duration::from_secs(10),
        "a --limit capture ended after {:?}",
        run.elapsed
    );
    let lines = fixture_lines(&daemon.file("fixture.ndjson"));
    assert_eq!(lines.len(), 3, "{lines:?}");
    let sent = multiset(&common::ndjson(sample_text().as_bytes()));
    for line in &lines {
        let event: Value = serde_json::from_str(line).unwrap();
        assert!(sent.contains_key(&canonical(&event)), "not sent: {line}");
    }
    daemon.wait_sessions(0);
}

#[test]
fn the_server_caps_the_duration() {
    let daemon = Daemon::start(Setup {
        tap: true,
        config: Some("daemon:\n  tap:\n    max_duration: 1s\n"),
        ..Setup::default()
    });
    let run = daemon.run_tap(&["--duration", "20s", "-o", "fixture.ndjson"]);
    run.success()
        .stderr_has("Captured 0 events (0 dropped) in 1.")
        .stderr_has("before the requested --duration 20s: the daemon caps tap sessions at daemon.tap.max_duration");
    assert!(
        run.elapsed < Duration::from_secs(10),
        "the capped capture ended after {:?}",
        run.elapsed
    );
    assert!(
        run.elapsed >= Duration::from_millis(900),
        "{:?}",
        run.elapsed
    );
    assert!(fixture_lines(&daemon.file("fixture.ndjson")).is_empty());
}

#[test]
fn a_tap_beyond_the_session_cap_exits_3_with_the_409_reason() {
    let daemon = Daemon::start(Setup {
        tap: true,
        config: Some("daemon:\n  tap:\n    max_sessions: 1\n"),
        ..Setup::default()
    });
    let mut first = daemon.spawn_tap(&["--duration", "30s", "-o", "first.ndjson"]);
    daemon.wait_sessions(1);
    let second = daemon.run_tap(&["--duration", "30s", "-o", "second.ndjson"]);
    second
        .code(3)
        .stderr_has("409 Conflict")
        .stderr_has("too many tap sessions: at most 1 at once");
    assert!(!daemon.file("second.ndjson").exists());
    assert!(first.is_running(), "the first session is unaffected");
    assert_eq!(daemon.metric("rsigma_tap_sessions_active"), 1.0);
}

#[test]
fn drops_under_a_tiny_buffer_leave_detection_complete() {
    const COPIES: usize = 250;
    let daemon = Daemon::start(Setup {
        tap: true,
        config: Some("daemon:\n  tap:\n    buffer_size: 1\n"),
        ..Setup::default()
    });
    let burst = sample_text().repeat(COPIES);
    let total = burst.lines().count();
    let burst_file = daemon.dir.path().join("burst.ndjson");
    fs::write(&burst_file, &burst).unwrap();
    let expected = eval(&burst_file);
    assert_eq!(expected.len(), 14 * COPIES);

    // The tap writes to a pipe nobody reads yet: a held client.
    let tap = daemon.spawn_tap(&["--duration", "6s"]);
    daemon.wait_sessions(1);
    let posted = Instant::now();
    daemon.post(&burst);
    daemon.wait_processed(total);
    let live = daemon.wait_detections(expected.len());
    assert_eq!(live.len(), expected.len());
    assert!(
        multiset(&live) == multiset(&expected),
        "the daemon's detections differ from engine eval's"
    );
    let processed_within_window = posted.elapsed() < Duration::from_secs(5);

    let run = tap.finish(TAP_TIMEOUT);
    run.success();
    let (captured, dropped) = run.stats();
    assert!(dropped > 0, "no drops with buffer_size 1:\n{}", run.stderr);
    run.stderr_has(&format!("warning: {dropped} events were dropped"));
    let events = common::ndjson(&run.stdout);
    assert_eq!(events.len() as u64, captured);
    if processed_within_window {
        // Every event was offered to the session inside its window.
        assert_eq!(captured + dropped, total as u64, "{}", run.stderr);
    }
}

#[test]

fn events_buffered_when_the_window_closes_are_streamed_or_counted() {
    // A held client: the tap writes to a pipe nobody reads until the window
    // has closed, so the session buffer is full when the deadline passes.
    // Large events saturate the pipe and the sockets in between.
    const EVENTS: usize = 4000;
    let daemon = Daemon::start(Setup {
        tap: true,
        config: Some("daemon:\n  tap:\n    buffer_size: 64\n"),
        ..Setup::default()
    });
    let pad = "x".repeat(2048);
    let burst: String = (0..EVENTS)
        .map(|n| format!("{{\"n\":{n},\"pad\":\"{pad}\"}}\n"))
        .collect();
    let tap = daemon.spawn_tap(&["--duration", "2s"]);
    daemon.wait_sessions(1);
    let opened = Instant::now();
    daemon.post(&burst);
    daemon.wait_processed(EVENTS);
    assert!(
        opened.elapsed() < Duration::from_millis(1500),
        "the burst took {:?}: not all inside the 2s window",
        opened.elapsed()
    );
    // Let the window close while the client is still held.
    thread::sleep(Duration::from_millis(2500).saturating_sub(opened.elapsed()));

    let run = tap.finish(TAP_TIMEOUT);
    run.success();
    let (captured, dropped) = run.stats();
    assert_eq!(common::ndjson(&run.stdout).len() as u64, captured);
    assert!(
        dropped > 0,
        "precondition: the held client filled the session buffer:\n{}",
        run.stderr
    );
    // Every event offered inside the window is in the fixture or counted.
    assert_eq!(
        captured + dropped,
        EVENTS as u64,
        "events neither captured nor counted as dropped:\n{}",
        run.stderr
    );
}

#[test]
fn an_open_tap_does_not_hold_up_the_daemons_shutdown() {
    let mut daemon = Daemon::start(Setup {
        tap: true,
        ..Setup::default()
    });
    let tap = daemon.spawn_tap(&["--duration", "60s", "-o", "fixture.ndjson"]);
    daemon.wait_sessions(1);
    daemon.post(&sample_text());
    daemon.wait_processed(20);
    let fixture = daemon.file("fixture.ndjson");
    daemon.wait("20 events in the fixture", || {
        fs::read_to_string(&fixture).is_ok_and(|t| t.lines().count() == 20)
    });
    let (status, took) = daemon.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    // The client ends too: with the summary (0), or reporting the cut (3).
    let run = tap.finish(Duration::from_secs(10));
    match run.status.code() {
        Some(0) => {
            run.stderr_has("Captured 20 events (0 dropped)");
        }
        Some(3) => {
            run.stderr_has("holds only the 20 events received before that");
        }
        other => panic!("the tap exited with {other:?}:\n{}", run.stderr),
    }
    let events = common::ndjson(fs::read(&fixture).unwrap().as_slice());
    assert_eq!(
        multiset(&events),
        multiset(&common::ndjson(sample_text().as_bytes()))
    );
}

/// Events with secrets at `user.email` (nested and flat) and `hosts[].ip`.
const SECRET_EVENTS: [&str; 4] = [
    r#"{"user":{"email":"alice@example.com"},"hosts":[{"ip":"10.1.2.3"},{"ip":"10.9.9.9"}],"n":1}"#,
    r#"{"user":{"email":"alice@example.com","name":"alice"},"hosts":[{"ip":"10.9.9.9"}],"n":2}"#,
    r#"{"user":{"email":"bob@example.com"},"hosts":[],"n":3}"#,
    r#"{"user.email":"carol@example.com","n":4}"#,
];
const SECRETS: [&str; 5] = [
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "10.1.2.3",
    "10.9.9.9",
];
const REDACT: &str = "user.email,hosts.ip";

/// Asserts `token` looks like `rsigma:redacted:<32 hex>` and returns it.
fn token(value: &Value) -> &str {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a token: {value}"));
    let hex = text
        .strip_prefix("rsigma:redacted:")
        .unwrap_or_else(|| panic!("not a token: {text}"));
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a token: {text}"
    );
    text
}

/// The redacted secret events of one capture, by `n`, checked for shape and
/// token equality; returns the token of alice's email.
fn check_redacted(events: &[Value]) -> String {
    let by_n: BTreeMap<u64, &Value> = events
        .iter()
        .filter_map(|e| Some((e["n"].as_u64()?, e)))
        .collect();
    assert_eq!(by_n.len(), 4, "{events:?}");
    let (e1, e2, e3, e4) = (by_n[&1], by_n[&2], by_n[&3], by_n[&4]);
    let alice = token(&e1["user"]["email"]);
    assert_eq!(
        token(&e2["user"]["email"]),
        alice,
        "equal values, equal tokens"
    );
    assert_ne!(token(&e3["user"]["email"]), alice);
    assert_eq!(e2["user"]["name"], "alice", "other fields are kept");
    // Array fan-out: every element.
    let ip1 = token(&e1["hosts"][0]["ip"]);
    let ip9 = token(&e1["hosts"][1]["ip"]);
    assert_ne!(ip1, ip9);
    assert_eq!(token(&e2["hosts"][0]["ip"]), ip9);
    assert_eq!(e3["hosts"], json!([]));
    // A flat dotted key.
    token(&e4["user.email"]);
    alice.to_owned()
}

/// Asserts none of the secrets occurs in `bytes`.
fn assert_no_secrets(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret:?}:\n{text}");
    }
}

#[test]
fn redaction_happens_in_the_daemon() {
    let daemon = Daemon::start(Setup {
        tap: true,
        ..Setup::default()
    });
    // Two CLI captures and two raw HTTP streams, all open at once.
    let a = daemon.spawn_tap(&[
        "--redact-fields",
        REDACT,
        "--limit",
        "5",
        "--duration",
        "30s",
        "-o",
        "a.ndjson",
    ]);
    let b = daemon.spawn_tap(&[
        "--redact-fields",
        REDACT,
        "--limit",
        "5",
        "--duration",
        "30s",
        "-o",
        "b.ndjson",
    ]);
    let stream = |query: String| {
        let url = daemon.url(&format!("/api/v1/tap?{query}"));
        thread::spawn(move || {
            let response = http(TAP_TIMEOUT)
                .get(url)
                .send()
                .and_then(|r| r.error_for_status())
                .expect("the tap opens");
            response.bytes().expect("the stream is read").to_vec()
        })
    };
    let decoded_wire = stream(format!(
        "duration=30s&limit=5&redact_fields={}",
        REDACT.replace(',', "%2C")
    ));
    let raw_wire = stream(format!(
        "duration=30s&limit=4&stage=raw&redact_fields={}",
        REDACT.replace(',', "%2C")
    ));
    daemon.wait_sessions(4);
    // A line that is not JSON first (a plain event on the decoded stage, a
    // dropped line on a redacting raw capture), then the secrets.
    daemon.post("not json at all\n");
    daemon.wait_processed(1);
    // The count of a processed line reaches the sessions when the worker
    // flushes its batch to them: wait for that, or a slow worker's flush
    // could arrive after the secrets closed the raw session at its limit.
    daemon.wait("the raw capture's drop", || {
        daemon.metric("rsigma_tap_events_dropped_total") >= 1.0
    });
    daemon.post(&SECRET_EVENTS.join("\n"));

    let (a, b) = (a.finish(TAP_TIMEOUT), b.finish(TAP_TIMEOUT));
    for run in [&a, &b] {
        run.success().stderr_has("Captured 5 events (0 dropped)");
    }
    let events_a = common::ndjson(fs::read(daemon.file("a.ndjson")).unwrap().as_slice());
    let events_b = common::ndjson(fs::read(daemon.file("b.ndjson")).unwrap().as_slice());
    assert_no_secrets("capture a", &fs::read(daemon.file("a.ndjson")).unwrap());
    assert_no_secrets("capture b", &fs::read(daemon.file("b.ndjson")).unwrap());
    let alice_a = check_redacted(&events_a);
    let alice_b = check_redacted(&events_b);
    assert_ne!(alice_a, alice_b, "tokens differ across captures");

    // The bytes on the wire.
    let decoded_wire = decoded_wire.join().unwrap();
    assert_no_secrets("the decoded stream", &decoded_wire);
    let decoded_lines = common::ndjson(&decoded_wire);
    let (summary, events) = decoded_lines.split_last().unwrap();
    assert_eq!(summary["rsigma_tap_summary"]["captured"], 5);
    check_redacted(events);

    let raw_wire = raw_wire.join().unwrap();
    assert_no_secrets("the raw stream", &raw_wire);
    let text = String::from_utf8(raw_wire).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let summary: Value = serde_json::from_str(lines.pop().unwrap()).unwrap();
    assert_eq!(summary["rsigma_tap_summary"]["captured"], 4, "{summary}");
    assert_eq!(
        summary["rsigma_tap_summary"]["dropped"], 1,
        "the non-JSON line is dropped from a redacting raw capture: {summary}"
    );
    let raw_events: Vec<Value> = lines
        .iter()
        .map(|line| {
            let inner: String = serde_json::from_str(line).expect("a JSON string");
            serde_json::from_str(&inner).expect("redacted JSON text")
        })
        .collect();
    check_redacted(&raw_events);
}

#[test]
fn a_client_that_disconnects_frees_its_session_at_once() {
    let daemon = Daemon::start(Setup {
        tap: true,
        config: Some("daemon:\n  tap:\n    max_sessions: 1\n"),
        ..Setup::default()
    });
    let client = http(Duration::from_secs(60));
    let mut response = client
        .get(daemon.url("/api/v1/tap?duration=60s"))
        .send()
        .and_then(|r| r.error_for_status())
        .expect("the tap opens");
    daemon.wait_sessions(1);
    daemon.post(&sample_text());
    let mut first = [0u8; 1];
    assert_eq!(
        response.read(&mut first).unwrap(),
        1,
        "the first bytes arrive"
    );
    assert_eq!(first[0], b'{');
    drop(response);
    drop(client);
    let dropped = Instant::now();
    daemon.wait_sessions(0);
    assert!(dropped.elapsed() < Duration::from_secs(5));
    // The slot is free: a new tap is accepted.
    daemon
        .run_tap(&["--duration", "1s", "-o", "fixture.ndjson"])
        .success()
        .stderr_has("Captured ");
    assert_eq!(daemon.metric("rsigma_tap_sessions_total"), 2.0);
}
