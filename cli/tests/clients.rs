//! `rsigma engine status` and `rsigma config reload` against a fake daemon.

mod common;
mod fake_daemon;

use std::time::{Duration, Instant};

use fake_daemon::{FakeDaemon, Reply, Sandbox, closed_port, status_json};
use predicates::prelude::*;
use serde_json::Value;

const OK_RELOAD_A: &str =
    r#"{"at":"2024-05-01T10:00:00Z","ok":true,"error":null,"trigger":"watch"}"#;
const OK_RELOAD_B: &str = r#"{"at":"2024-05-01T10:05:00Z","ok":true,"error":null,"trigger":"api"}"#;
const FAILED_RELOAD_B: &str = r#"{"at":"2024-05-01T10:05:00Z","ok":false,"error":"rules/bad.yml: rule 'Bad': unknown modifier 'contain'","trigger":"api"}"#;
const ACCEPTED: &str = r#"{"status":"accepted","rules_hash":"abc123"}"#;

/// Parses stdout as a stream of JSON documents.
fn json_docs(stdout: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("stdout is a stream of JSON values")
}

/// A fake daemon whose status has `last_reload` = `OK_RELOAD_A` for the first
/// `stale_polls` status requests and `final_reload` afterwards; reload answers 202.
fn reloading_daemon(stale_polls: usize, final_reload: &'static str) -> FakeDaemon {
    let polls = std::sync::atomic::AtomicUsize::new(0);
    FakeDaemon::start(move |request, _| match request.method.as_str() {
        "POST" => Reply::json(202, ACCEPTED),
        _ => {
            let n = polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < stale_polls {
                Reply::json(200, status_json(OK_RELOAD_A))
            } else {
                Reply::json(200, status_json(final_reload))
            }
        }
    })
}

#[test]
fn status_prints_the_json_body_pretty_and_exits_0() {
    let daemon = FakeDaemon::always(Reply::json(200, status_json(OK_RELOAD_A)));
    let sandbox = Sandbox::new();
    let output = sandbox
        .rsigma(&["engine", "status", "--addr", &daemon.addr().to_string()])
        .assert()
        .success()
        .stderr("")
        .get_output()
        .stdout
        .clone();
    let docs = json_docs(&output);
    assert_eq!(docs.len(), 1);
    let expected: Value = serde_json::from_str(&status_json(OK_RELOAD_A)).unwrap();
    assert_eq!(docs[0], expected);
    let text = String::from_utf8(output).unwrap();
    assert!(
        text.contains("\n  \"version\": \"0.1.0\""),
        "pretty: {text}"
    );
    assert_eq!(daemon.lines(), ["GET /api/v1/status"]);
}

#[test]
fn status_unreachable_names_the_address() {
    let port = closed_port();
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&["engine", "status", "--addr", &format!("127.0.0.1:{port}")])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "could not reach the rsigma daemon at http://127.0.0.1:{port}/"
        )))
        .stderr(predicate::str::contains("refused"));
}

#[test]
fn status_non_2xx_is_exit_3_with_code_and_body() {
    let daemon = FakeDaemon::always(Reply::json(503, r#"{"error":"not ready: loading rules"}"#));
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&["engine", "status", "--addr", &daemon.addr().to_string()])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains("503"))
        .stderr(predicate::str::contains("not ready: loading rules"))
        .stderr(predicate::str::contains("GET /api/v1/status"));
}

#[test]
fn status_body_that_is_not_json_is_exit_3() {
    for body in ["<html>hello</html>", ""] {
        let daemon = FakeDaemon::always(Reply::text(200, body));
        let sandbox = Sandbox::new();
        sandbox
            .rsigma(&["engine", "status", "--addr", &daemon.addr().to_string()])
            .assert()
            .code(3)
            .stdout("")
            .stderr(predicate::str::contains("not JSON"));
    }
}

#[test]
fn reload_posts_and_prints_the_answer() {
    let daemon = FakeDaemon::always(Reply::json(202, ACCEPTED));
    let sandbox = Sandbox::new();
    let output = sandbox
        .rsigma(&["config", "reload", "--addr", &daemon.addr().to_string()])
        .assert()
        .success()
        .stderr("")
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        json_docs(&output),
        [serde_json::from_str::<Value>(ACCEPTED).unwrap()]
    );
    assert_eq!(daemon.lines(), ["POST /api/v1/reload"]);
}

#[test]
fn reload_sends_expected_hash_as_query() {
    let daemon = FakeDaemon::always(Reply::json(202, ACCEPTED));
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&[
            "config",
            "reload",
            "--addr",
            &daemon.addr().to_string(),
            "--expected-hash",
            "abc123",
        ])
        .assert()
        .success();
    assert_eq!(daemon.lines(), ["POST /api/v1/reload?expected_hash=abc123"]);
}

#[test]
fn reload_conflict_is_exit_3_with_the_body() {
    let daemon = FakeDaemon::always(Reply::json(
        409,
        r#"{"status":"stale","expected_hash":"abc123","disk_hash":"def456"}"#,
    ));
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&[
            "config",
            "reload",
            "--addr",
            &daemon.addr().to_string(),
            "--expected-hash",
            "abc123",
        ])
        .assert()
        .code(3)
        .stdout("")
        .stderr(predicate::str::contains("409"))
        .stderr(predicate::str::contains("stale"))
        .stderr(predicate::str::contains("def456"));
}

#[test]
fn reload_wait_succeeds_when_last_reload_changes_and_is_ok() {
    // Baseline status, then two stale polls, then the new reload.
    let daemon = reloading_daemon(3, OK_RELOAD_B);
    let sandbox = Sandbox::new();
    let output = sandbox
        .rsigma(&[
            "config",
            "reload",
            "--wait",
            "--addr",
            &daemon.addr().to_string(),
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let docs = json_docs(&output);
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(docs[0]["status"], "accepted");
    assert_eq!(docs[1], serde_json::from_str::<Value>(OK_RELOAD_B).unwrap());
    assert_eq!(
        daemon.lines(),
        [
            "GET /api/v1/status",
            "POST /api/v1/reload",
            "GET /api/v1/status",
            "GET /api/v1/status",
            "GET /api/v1/status",
        ]
    );
}

#[test]
fn reload_wait_fails_with_the_reload_error() {
    let daemon = reloading_daemon(1, FAILED_RELOAD_B);
    let sandbox = Sandbox::new();
    let output = sandbox
        .rsigma(&[
            "config",
            "reload",
            "--wait",
            "--addr",
            &daemon.addr().to_string(),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "the reload failed: rules/bad.yml: rule 'Bad': unknown modifier 'contain'",
        ))
        .get_output()
        .stdout
        .clone();
    let docs = json_docs(&output);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["ok"], false);
}

#[test]
fn reload_wait_after_no_previous_reload() {
    let polls = std::sync::atomic::AtomicUsize::new(0);
    let daemon = FakeDaemon::start(move |request, _| {
        if request.method == "POST" {
            return Reply::json(202, ACCEPTED);
        }
        if polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply::json(200, status_json("null"))
        } else {
            Reply::json(200, status_json(OK_RELOAD_B))
        }
    });
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&[
            "config",
            "reload",
            "--wait",
            "--addr",
            &daemon.addr().to_string(),
        ])
        .assert()
        .success();
}

#[test]
fn reload_wait_times_out() {
    let daemon = reloading_daemon(usize::MAX, OK_RELOAD_B);
    let sandbox = Sandbox::new();
    let start = Instant::now();
    sandbox
        .rsigma(&[
            "config",
            "reload",
            "--wait",
            "--timeout",
            "700ms",
            "--addr",
            &daemon.addr().to_string(),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("timed out after 700ms"));
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    // Baseline, POST, then polls every 200 ms.
    let polls = daemon.lines().len() - 2;
    assert!((1..=6).contains(&polls), "{:?}", daemon.lines());
}

#[test]
fn reload_wait_baseline_failure_does_not_post() {
    let daemon = FakeDaemon::always(Reply::json(500, r#"{"error":"boom"}"#));
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&[
            "config",
            "reload",
            "--wait",
            "--addr",
            &daemon.addr().to_string(),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("500"));
    assert_eq!(daemon.lines(), ["GET /api/v1/status"]);
}

#[test]
fn timeout_without_wait_is_a_usage_error() {
    Sandbox::new()
        .rsigma(&["config", "reload", "--timeout", "5s"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--wait"));
}

#[test]
fn address_forms_reach_the_daemon() {
    let daemon = FakeDaemon::always(Reply::json(200, status_json("null")));
    let port = daemon.port();
    let sandbox = Sandbox::new();
    for addr in [
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("0.0.0.0:{port}"),
        format!("http://0.0.0.0:{port}"),
    ] {
        sandbox
            .rsigma(&["engine", "status", "--addr", &addr])
            .assert()
            .success();
    }
    assert_eq!(daemon.lines(), vec!["GET /api/v1/status"; 5]);
}

#[test]
fn url_path_is_kept_as_a_prefix() {
    let daemon = FakeDaemon::always(Reply::json(202, ACCEPTED));
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&[
            "config",
            "reload",
            "--addr",
            &format!("http://127.0.0.1:{}/rsigma", daemon.port()),
            "--expected-hash",
            "a b&c",
        ])
        .assert()
        .success();
    assert_eq!(
        daemon.lines(),
        ["POST /rsigma/api/v1/reload?expected_hash=a+b%26c"]
    );
}

#[test]
fn ipv6_wildcard_maps_to_ipv6_loopback() {
    let Some(daemon) = FakeDaemon::start_v6(|_, _| Reply::json(200, status_json("null"))) else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    let sandbox = Sandbox::new();
    for addr in [
        format!("[::]:{}", daemon.port()),
        format!("[::1]:{}", daemon.port()),
    ] {
        sandbox
            .rsigma(&["engine", "status", "--addr", &addr])
            .assert()
            .success();
    }
    assert_eq!(daemon.lines().len(), 2);
}

#[test]
fn https_urls_speak_tls() {
    // The fake daemon is plain HTTP: the client must open with a TLS handshake,
    // which fails, and say so.
    let daemon = FakeDaemon::always(Reply::json(200, status_json("null")));
    let sandbox = Sandbox::new();
    sandbox
        .rsigma(&[
            "engine",
            "status",
            "--addr",
            &format!("https://127.0.0.1:{}", daemon.port()),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "could not reach the rsigma daemon at https://127.0.0.1:{}/",
            daemon.port()
        )));
    assert_eq!(daemon.lines(), ["TLS "]);
}

#[test]
fn invalid_addresses_are_usage_errors() {
    let sandbox = Sandbox::new();
    for addr in [
        "host:notaport",
        "ftp://127.0.0.1:1",
        "::1:70000",
        "host:",
        "",
    ] {
        sandbox
            .rsigma(&["engine", "status", "--addr", addr])
            .assert()
            .code(3)
            .stderr(predicate::str::contains(format!("invalid --addr '{addr}'")));
    }
}

#[test]
fn tls_material_errors_are_exit_3() {
    let sandbox = Sandbox::new();
    let missing = sandbox.cwd.path().join("missing-ca.pem");
    sandbox
        .rsigma(&["engine", "status", "--ca-cert", missing.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--ca-cert"))
        .stderr(predicate::str::contains("missing-ca.pem"));

    let junk = sandbox.cwd.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    sandbox
        .rsigma(&["engine", "status", "--ca-cert", junk.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("holds no PEM certificate"));
    sandbox
        .rsigma(&[
            "engine",
            "status",
            "--client-cert",
            junk.to_str().unwrap(),
            "--client-key",
            junk.to_str().unwrap(),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--client-cert"));

    // --client-cert needs --client-key (and the other way round): usage error.
    sandbox
        .rsigma(&["config", "reload", "--client-cert", junk.to_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--client-key"));
}

/// Runs `openssl` with `args` in `dir`; false when it fails or is not installed.
fn openssl(dir: &std::path::Path, args: &[&str]) -> bool {
    std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Kills and reaps the child process on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_with_private_ca_and_client_certificate() {
    use std::io::BufRead;

    // A real TLS server: `openssl s_server -WWW` serves files from its working
    // directory and, with -Verify, requires a client certificate. Skipped when
    // the openssl command-line tool is not available.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        d.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let mut steps: Vec<Vec<&str>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=rsigma test CA",
            ],
        ]
        .concat(),
    ];
    for name in ["server", "client"] {
        let (key, csr, pem, ext) = match name {
            "server" => ("server.key", "server.csr", "server.pem", "server.ext"),
            _ => ("client.key", "client.csr", "client.pem", "client.ext"),
        };
        let subject = if name == "server" {
            "/CN=127.0.0.1"
        } else {
            "/CN=client"
        };
        steps.push(
            [
                &["req"][..],
                &ec,
                &["-keyout", key, "-out", csr, "-subj", subject],
            ]
            .concat(),
        );
        steps.push(vec![
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    }
    for step in &steps {
        if !openssl(d, step) {
            eprintln!(
                "skipped: `openssl {}` failed or openssl is not installed",
                step.join(" ")
            );
            return;
        }
    }
    let www = d.join("www");
    std::fs::create_dir_all(www.join("api/v1")).unwrap();
    std::fs::write(www.join("api/v1/status"), status_json("null")).unwrap();

    let server = std::process::Command::new("openssl")
        .args([
            "s_server", "-accept", "0", "-naccept", "3", "-WWW", "-Verify", "1",
        ])
        .arg("-cert")
        .arg(d.join("server.pem"))
        .arg("-key")
        .arg(d.join("server.key"))
        .arg("-CAfile")
        .arg(d.join("ca.pem"))
        .current_dir(&www)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut server) = server.map(KillOnDrop) else {
        eprintln!("skipped: openssl s_server could not be started");
        return;
    };
    let stdout = server.0.stdout.take().unwrap();
    let port = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("ACCEPT ")
                .and_then(|addr| addr.rsplit_once(':'))
                .and_then(|(_, port)| port.parse::<u16>().ok())
        });
    let Some(port) = port else {
        eprintln!("skipped: openssl s_server did not report its port");
        return;
    };

    let addr = format!("https://127.0.0.1:{port}");
    let path = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let sandbox = Sandbox::new();
    let output = sandbox
        .rsigma(&[
            "engine",
            "status",
            "--addr",
            &addr,
            "--ca-cert",
            &path("ca.pem"),
            "--client-cert",
            &path("client.pem"),
            "--client-key",
            &path("client.key"),
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(json_docs(&output)[0]["version"], "0.1.0");

    // The server requires a client certificate.
    sandbox
        .rsigma(&[
            "engine",
            "status",
            "--addr",
            &addr,
            "--ca-cert",
            &path("ca.pem"),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "could not reach the rsigma daemon at {addr}/"
        )));

    // Without --ca-cert, the private CA is not trusted.
    sandbox
        .rsigma(&[
            "engine",
            "status",
            "--addr",
            &addr,
            "--client-cert",
            &path("client.pem"),
            "--client-key",
            &path("client.key"),
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("certificate"));
}
