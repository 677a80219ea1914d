//! Helpers for the tests that run the real `rsigma engine daemon` binary:
//! starting it on a free loopback port with its stdout and stderr captured to
//! files, bounded polling (health, readiness, status, output files), HTTP
//! calls, metrics parsing, signals, and the documented rules digest.
//!
//! Every wait is bounded ([`WAIT`], 10 s) and fails with the daemon's stderr;
//! a [`Daemon`] is killed when dropped, so a failing test never leaves one
//! running.

#![allow(dead_code)] // each test uses a different subset

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::isolate;
pub use crate::common::{fixtures, free_port};

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The `rsigma` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rsigma")
}

/// `tests/fixtures/daemon/<name>`.
pub fn daemon_fixture(name: &str) -> PathBuf {
    fixtures().join("daemon").join(name)
}

/// Replaces `dest` atomically with `content`: written next to its directory,
/// then renamed into place, so a file watcher never sees a half-written file.
pub fn write_atomically(dest: &Path, content: &[u8]) {
    let dir = dest.parent().expect("the destination has a directory");
    let staging = dir
        .parent()
        .expect("the destination directory has a parent")
        .join(format!(
            ".staging-{}",
            dest.file_name().unwrap().to_string_lossy()
        ));
    fs::write(&staging, content).expect("writing the staging file");
    fs::rename(&staging, dest).expect("renaming the staging file into place");
}

/// Copies the fixture `tests/fixtures/daemon/<name>` to `dest` atomically.
pub fn install_fixture(name: &str, dest: &Path) {
    let content = fs::read(daemon_fixture(name)).expect("reading the fixture");
    write_atomically(dest, &content);
}

/// Parses NDJSON text; a last line without its newline (still being written) is left out.
pub fn parse_ndjson(text: &str) -> Vec<Value> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect()
}

/// The NDJSON records of a file written by a sink (none while it does not exist).
pub fn read_ndjson(path: &Path) -> Vec<Value> {
    match fs::read_to_string(path) {
        Ok(text) => parse_ndjson(&text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => panic!("reading {}: {err}", path.display()),
    }
}

/// Records as a sorted list of their JSON texts: a multiset, order ignored.
pub fn multiset(records: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = records.iter().map(Value::to_string).collect();
    texts.sort();
    texts
}

/// The `rule_title` of a record.
pub fn rule_title(record: &Value) -> &str {
    record["rule_title"].as_str().unwrap_or_default()
}

/// A 64-character lowercase hex string (a SHA-256 digest).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The rules digest as documented on `rsigma_engine::parser::RulesDigest`:
/// SHA-256 over every `.yml`/`.yaml` file below `dir` (hidden entries
/// skipped), in name order, each as `name NUL length NUL content`, where
/// `name` is the path below `dir` with `/` separators. Computed with
/// `sha256sum`, independently of the daemon's code.
pub fn documented_rules_digest(dir: &Path) -> String {
    fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, Vec<u8>)>) {
        for entry in fs::read_dir(dir).expect("reading the rules directory") {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                collect(root, &path, files);
            } else if name.ends_with(".yml") || name.ends_with(".yaml") {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push((relative, fs::read(&path).expect("reading a rule file")));
            }
        }
    }
    let mut files = Vec::new();
    collect(dir, dir, &mut files);
    files.sort();
    let mut input = Vec::new();
    for (name, content) in &files {
        input.extend_from_slice(name.as_bytes());
        input.push(0);
        input.extend_from_slice(content.len().to_string().as_bytes());
        input.push(0);
        input.extend_from_slice(content);
    }
    let mut sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running sha256sum");
    sha.stdin.take().unwrap().write_all(&input).unwrap();
    let output = sha.wait_with_output().expect("sha256sum finishes");
    assert!(output.status.success(), "sha256sum failed");
    String::from_utf8(output.stdout).unwrap()[..64].to_owned()
}

/// Prometheus text exposition: `name{labels}` → value.
#[derive(Debug, Clone)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// Parses the text format (comments skipped).
    pub fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a metric sample: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("a numeric sample value: {line}"));
            samples.insert(key.to_owned(), value);
        }
        Metrics(samples)
    }

    /// The sample `key` (`name` or `name{label="value"}`); panics when absent.
    pub fn get(&self, key: &str) -> f64 {
        *self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("metric {key} missing; have {:?}", self.0.keys()))
    }

    /// True when some sample belongs to the metric family `name`
    /// (`name`, `name{...}`, or a histogram's `name_bucket`/`_sum`/`_count`).
    pub fn has_family(&self, name: &str) -> bool {
        self.0.keys().any(|key| {
            let bare = key.split('{').next().unwrap_or(key);
            bare == name
                || bare
                    .strip_prefix(name)
                    .is_some_and(|rest| matches!(rest, "_bucket" | "_sum" | "_count"))
        })
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }
}

/// How a finished run of the binary ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// The whole stdout.
    pub stdout: String,
    /// The whole stderr.
    pub stderr: String,
}

/// Numbers the log files of the daemons started in one test process.
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// A command line for `rsigma engine daemon`; `--api-addr 127.0.0.1:<free
/// port>` is added unless [`DaemonCommand::listen_on`] says otherwise.
#[derive(Debug, Clone)]
pub struct DaemonCommand {
    dir: PathBuf,
    args: Vec<OsString>,
    host: Option<String>,
    stdin: bool,
    envs: Vec<(OsString, OsString)>,
}

impl DaemonCommand {
    /// A daemon working in `dir` (its cwd, `HOME` and `XDG_CONFIG_HOME`, so no
    /// config file of the machine is picked up; the logs go there too).
    pub fn new(dir: &Path) -> DaemonCommand {
        DaemonCommand {
            dir: dir.to_path_buf(),
            args: Vec::new(),
            host: Some("127.0.0.1".into()),
            stdin: false,
            envs: Vec::new(),
        }
    }

    /// Sets an environment variable of the daemon.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> DaemonCommand {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> DaemonCommand {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> DaemonCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `--api-addr <host>:<free port>` (`None`: no `--api-addr` at all).
    pub fn listen_on(mut self, host: Option<&str>) -> DaemonCommand {
        self.host = host.map(str::to_owned);
        self
    }

    /// Gives the daemon a pipe as stdin (see [`Daemon::stdin`]); otherwise it reads /dev/null.
    pub fn piped_stdin(mut self) -> DaemonCommand {
        self.stdin = true;
        self
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(&self) -> Daemon {
        let port = free_port();
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let stdout_path = self.dir.join(format!("daemon-{run}.stdout"));
        let stderr_path = self.dir.join(format!("daemon-{run}.stderr"));
        let mut command = Command::new(binary());
        command.args(["engine", "daemon"]).args(&self.args);
        if let Some(host) = &self.host {
            command.arg("--api-addr").arg(format!("{host}:{port}"));
        }
        command
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(fs::File::create(&stdout_path).expect("creating the stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("creating the stderr file"));
        isolate(&mut command, &self.dir);
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().expect("starting rsigma engine daemon");
        Daemon {
            child,
            port,
            stdout_path,
            stderr_path,
            exit: None,
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(WAIT)
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Starts the daemon and waits until `/healthz` and `/readyz` answer 200.
    /// A daemon that lost its port to another process is started again on a new one.
    pub fn start(&self) -> Daemon {
        for _ in 0..3 {
            let mut daemon = self.spawn();
            match daemon.try_wait_ready() {
                Ok(()) => return daemon,
                Err(_) if daemon.stderr().contains("cannot listen on") => continue,
                Err(why) => panic!("{why}\n{}", daemon.logs()),
            }
        }
        panic!("the daemon could not get a free port three times");
    }

    /// Runs the daemon expecting it to stop by itself (a startup error), within [`WAIT`].
    pub fn run_to_exit(&self) -> Finished {
        let mut daemon = self.spawn();
        daemon.wait_exit();
        daemon.finished()
    }
}

/// A running `rsigma engine daemon`; killed when dropped.
pub struct Daemon {
    child: Child,
    /// The API port.
    pub port: u16,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    exit: Option<ExitStatus>,
    http: reqwest::blocking::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything written on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// stderr (and the exit status, if any) for failure messages.
    pub fn logs(&self) -> String {
        let exit = match self.exit {
            Some(status) => status.to_string(),
            None => "still running".to_owned(),
        };
        format!(
            "--- daemon (pid {}, {exit}) stderr ---\n{}",
            self.pid(),
            self.stderr()
        )
    }

    /// The stdin pipe (only with [`DaemonCommand::piped_stdin`]); dropping it closes stdin.
    pub fn stdin(&mut self) -> ChildStdin {
        self.child
            .stdin
            .take()
            .expect("the daemon has a piped stdin")
    }

    /// Whether the process has exited (and records how).
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("polling the daemon");
        }
        self.exit.is_some()
    }

    /// Polls `probe` (at most every 100 ms) until it returns `Some`, for at most
    /// [`WAIT`]; fails with the daemon's stderr, also as soon as the daemon exits.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&mut Daemon) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(value) = probe(self) {
                return value;
            }
            if self.has_exited() {
                panic!(
                    "the daemon exited while waiting for {what}\n{}",
                    self.logs()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {WAIT:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(5);
        let mut healthy = false;
        loop {
            if !healthy {
                healthy = self.try_get("/healthz").is_some_and(|a| a.status == 200);
            }
            if healthy && self.try_get("/readyz").is_some_and(|a| a.status == 200) {
                return Ok(());
            }
            if self.has_exited() {
                return Err("the daemon exited before it was ready".into());
            }
            if Instant::now() >= deadline {
                return Err(format!("the daemon was not ready after {WAIT:?}"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Polls `/readyz` without pausing until it answers 200, so the caller
    /// acts as soon as the daemon reports ready (for race tests).
    pub fn wait_ready_eagerly(&mut self) {
        let deadline = Instant::now() + WAIT;
        while self.try_get("/readyz").is_none_or(|a| a.status != 200) {
            if self.has_exited() {
                panic!("the daemon exited before it was ready\n{}", self.logs());
            }
            if Instant::now() >= deadline {
                panic!("the daemon was not ready after {WAIT:?}\n{}", self.logs());
            }
        }
    }

    /// Waits until `/healthz` and `/readyz` answer 200.
    pub fn wait_ready(&mut self) {
        if let Err(why) = self.try_wait_ready() {
            panic!("{why}\n{}", self.logs());
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn try_get(&self, path: &str) -> Option<Answer> {
        let response = self.http.get(self.url(path)).send().ok()?;
        let status = response.status().as_u16();
        Some(Answer {
            status,
            body: response.text().ok()?,
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Answer {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} failed\n{}", self.logs()))
    }

    /// `POST path` with `body`.
    pub fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> Answer {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-ndjson")
            .body(body.into())
            .send()
            .unwrap_or_else(|err| panic!("POST {path} failed: {err}\n{}", self.logs()));
        let status = response.status().as_u16();
        Answer {
            status,
            body: response.text().expect("reading the answer"),
        }
    }

    /// `POST /api/v1/events`, expecting `200 {"accepted": expected, "rejected": 0}`.
    pub fn post_events(&self, body: impl Into<Vec<u8>>, expected: u64) {
        let answer = self.post("/api/v1/events", body);
        assert_eq!(answer.status, 200, "POST /api/v1/events: {}", answer.body);
        assert_eq!(
            answer.json(),
            serde_json::json!({ "accepted": expected, "rejected": 0 }),
            "POST /api/v1/events"
        );
    }

    /// `GET /api/v1/status` as JSON.
    pub fn status(&self) -> Value {
        let answer = self.get("/api/v1/status");
        assert_eq!(answer.status, 200, "GET /api/v1/status: {}", answer.body);
        answer.json()
    }

    /// `GET /api/v1/status` as JSON, or `None` when it cannot be had (for polls).
    pub fn try_status(&self) -> Option<Value> {
        self.try_get("/api/v1/status")
            .filter(|answer| answer.status == 200)
            .and_then(|answer| serde_json::from_str(&answer.body).ok())
    }

    /// `GET /metrics`, parsed, or `None` when it cannot be had (for polls).
    pub fn try_metrics(&self) -> Option<Metrics> {
        self.try_get("/metrics")
            .filter(|answer| answer.status == 200)
            .map(|answer| Metrics::parse(&answer.body))
    }

    /// `GET /metrics`, parsed.
    pub fn metrics(&self) -> Metrics {
        let answer = self.get("/metrics");
        assert_eq!(answer.status, 200, "GET /metrics: {}", answer.body);
        Metrics::parse(&answer.body)
    }

    /// Waits until `status.events_processed` reaches `count`.
    pub fn wait_processed(&mut self, count: u64) {
        self.wait_for(&format!("{count} events processed"), |d| {
            let processed = d.try_status()?["events_processed"].as_u64();
            (processed >= Some(count)).then_some(())
        });
    }

    /// Waits until the NDJSON file `path` holds at least `count` records; returns them all.
    pub fn wait_records(&mut self, path: &Path, count: usize) -> Vec<Value> {
        self.wait_for(&format!("{count} records in {}", path.display()), |_| {
            let records = read_ndjson(path);
            (records.len() >= count).then_some(records)
        })
    }

    /// Waits until a reload newer than `previous` (a status' `last_reload`)
    /// has finished; returns the new `last_reload`.
    pub fn wait_reload_after(&mut self, previous: &Value) -> Value {
        let previous_at = previous.get("at").cloned().unwrap_or(Value::Null);
        self.wait_for("a reload to finish", |d| {
            let last = d.try_status()?["last_reload"].clone();
            (!last.is_null() && last["at"] != previous_at).then_some(last)
        })
    }

    /// Whether the process has a handler installed for signal `number`
    /// (bit `number - 1` of `SigCgt` in `/proc/<pid>/status`).
    pub fn catches_signal(&self, number: u32) -> bool {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (number - 1)) != 0)
    }

    /// Whether the process holds an inotify instance with at least one watch.
    pub fn has_inotify_watch(&self) -> bool {
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return false;
        };
        fds.flatten().any(|fd| {
            let is_inotify = fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().contains("inotify"));
            let info = format!(
                "/proc/{}/fdinfo/{}",
                self.pid(),
                fd.file_name().to_string_lossy()
            );
            is_inotify && fs::read_to_string(info).is_ok_and(|text| text.contains("inotify wd:"))
        })
    }

    /// Waits until the file watcher is armed (so a change is not missed).
    pub fn wait_watching(&mut self) {
        self.wait_for("the file watcher", |d| d.has_inotify_watch().then_some(()));
    }

    /// Sends `signal` (`HUP`, `TERM`, `INT`) right away, with `kill(1)`.
    pub fn signal_now(&mut self, signal: &str) {
        assert!(
            !self.has_exited(),
            "cannot send SIG{signal}: the daemon has exited\n{}",
            self.logs()
        );
        // The child is not reaped yet, so its pid cannot have been reused.
        let sent = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -s {signal} failed");
    }

    /// Sends `signal` once the daemon has installed its handler for it (see
    /// [`Daemon::catches_signal`]), so the test does not depend on how soon
    /// after readiness the handlers are installed.
    pub fn signal(&mut self, signal: &str) {
        let number = match signal {
            "HUP" => 1,
            "INT" => 2,
            "TERM" => 15,
            other => panic!("unsupported signal {other}"),
        };
        self.wait_for(&format!("a SIG{signal} handler"), |d| {
            d.catches_signal(number).then_some(())
        });
        self.signal_now(signal);
    }

    /// Waits (at most [`WAIT`]) for the process to exit; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.has_exited() {
                return self.exit.expect("exited");
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                self.exit = self.child.wait().ok();
                panic!("the daemon did not exit within {WAIT:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for exit code 0.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM should stop the daemon with exit code 0\n{}",
            self.logs()
        );
    }

    /// The exit code and whole output of an exited daemon.
    pub fn finished(&mut self) -> Finished {
        assert!(self.has_exited(), "the daemon is still running");
        Finished {
            code: self.exit.and_then(|s| s.code()),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

/// Runs another `rsigma` command (such as `engine status`) in `dir`, isolated
/// from the machine's config files, within [`WAIT`].
pub fn rsigma_in(dir: &Path, args: &[&str]) -> Finished {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    isolate(&mut command, dir);
    let child = command.spawn().expect("starting rsigma");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = finished
        .recv_timeout(WAIT + WAIT)
        .unwrap_or_else(|_| panic!("rsigma {args:?} did not finish in time"))
        .expect("rsigma ran");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
