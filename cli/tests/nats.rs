//! The daemon's NATS JetStream source, sinks and dead-letter queue against
//! a real `nats-server -js` on loopback: delivery, acknowledgement after
//! delivery, redelivery after a crash, broker restarts, consumer groups,
//! replay and the state table, authentication and bad configurations.

mod common;
mod daemon_support;
mod nats_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use daemon_support::{Daemon, DaemonCommand, multiset, read_ndjson};
use nats_support::{NatsServer, events};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A daemon on the sample rules reading `input`, writing detections (with
/// their events) to `out`.
fn daemon(dir: &Path, input: &str, out: &Path) -> DaemonCommand {
    DaemonCommand::new(dir)
        .arg("-r")
        .arg(common::sample_rules())
        .args(["--input", input, "--include-event"])
        .args(["--output", &file_url(out)])
}

/// The `seq` of each detected event, duplicates kept.
fn seqs(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["event"]["seq"].as_u64().expect("event.seq"))
        .collect()
}

/// Polls `probe` for up to 60 s.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to 60 s: redeliveries wait for `--nats-ack-wait`, and the
/// tests of this file run side by side) until the detections in `out` cover
/// `expected`; returns them all.
fn wait_covered(daemon: &mut Daemon, out: &Path, expected: &BTreeSet<u64>) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = read_ndjson(out);
        let seen: BTreeSet<u64> = seqs(&records).into_iter().collect();
        if expected.is_subset(&seen) {
            return records;
        }
        assert!(
            !daemon.has_exited(),
            "the daemon exited before every expected detection\n{}",
            daemon.logs()
        );
        assert!(
            Instant::now() < deadline,
            "{} of {} expected detections after 60 s\n{}",
            expected.intersection(&seen).count(),
            expected.len(),
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const CONSUMER: &str = "rsigma_events_all";

#[test]
fn events_from_jetstream_give_detections_on_jetstream_and_bad_ones_go_to_the_dlq() {
    let nats = NatsServer::start();
    let client = nats.client();
    // An existing stream covering the input subject is used as it is.
    client.create_stream("EVENTS", &["events.>"]);
    let (payloads, expected) = events(200);
    client.publish_all("events.windows", &payloads);
    client.publish_all(
        "events.windows",
        &[b"{not json".to_vec(), b"{\"Image\": \"\xff\xfe\"}".to_vec()],
    );
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let mut daemon = daemon(dir.path(), &nats.url("events.>"), &out)
        .args(["--output", &nats.url("detections")])
        .args(["--dlq", &nats.url("rsigma.dlq")])
        .start();

    let records = wait_covered(&mut daemon, &out, &expected);
    assert_eq!(seqs(&records).len(), expected.len(), "no duplicates");
    // The JetStream output holds the same records, one message each, in a
    // stream the daemon created.
    assert_eq!(
        client.stream_of("detections").as_deref(),
        Some("RSIGMA_DETECTIONS")
    );
    let published = eventually("the detections on NATS", || {
        let messages = client.messages("detections");
        (messages.len() >= records.len()).then_some(messages)
    });
    assert_eq!(multiset(&published), multiset(&records));
    // Both bad messages are dead letters on NATS, with their reasons.
    let letters = eventually("two dead letters", || {
        let letters = client.messages("rsigma.dlq");
        (letters.len() >= 2).then_some(letters)
    });
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters.iter().all(|l| l["kind"] == json!("parse_error")),
        "{letters:?}"
    );
    assert!(
        letters
            .iter()
            .any(|l| l["reason"].as_str().unwrap().contains("not valid UTF-8")),
        "{letters:?}"
    );
    // Everything was acknowledged once: nothing pending, nothing redelivered.
    eventually("an empty backlog", || {
        (client.consumer_backlog("EVENTS", CONSUMER) == (0, 0)).then_some(())
    });
    let metrics = daemon.metrics();
    assert_eq!(metrics.get("rsigma_nats_redeliveries_total"), 0.0);
    assert_eq!(
        metrics.get("rsigma_nats_settled_total{outcome=\"ack\"}"),
        202.0
    );
    assert_eq!(metrics.get("rsigma_nats_pending_acks"), 0.0);
    let connected = format!(
        "rsigma_nats_connected{{server=\"127.0.0.1:{}\"}}",
        nats.port
    );
    assert_eq!(metrics.get(&connected), 1.0);
    daemon.stop();

    // A restarted daemon resumes after what was acknowledged.
    let mut daemon = daemon_again(dir.path(), &nats, &out);
    let (more, _) = events(5);
    client.publish_all("events.windows", &more);
    eventually("the new events processed", || {
        (client.consumer_backlog("EVENTS", CONSUMER) == (0, 0)).then_some(())
    });
    daemon.wait_for("one more detection", |_| {
        (read_ndjson(&out).len() > records.len()).then_some(())
    });
    assert_eq!(
        read_ndjson(&out).len(),
        records.len() + 2,
        "seq 0 and 4 of the new events; nothing redelivered"
    );
    daemon.stop();
}

fn daemon_again(dir: &Path, nats: &NatsServer, out: &Path) -> Daemon {
    daemon(dir, &nats.url("events.>"), out).start()
}

#[test]
fn a_daemon_killed_mid_stream_loses_no_detection() {
    let nats = NatsServer::start();
    let client = nats.client();
    client.create_stream("EVENTS", &["events.>"]);
    let (payloads, expected) = events(40_000);
    client.publish_all("events.windows", &payloads);
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let command = daemon(dir.path(), &nats.url("events.>"), &out).args([
        "--nats-ack-wait",
        "2",
        "--workers",
        "1",
    ]);
    let mut first = command.start();
    first.wait_for("the first detections", |_| {
        (!read_ndjson(&out).is_empty()).then_some(())
    });
    first.signal_now("KILL");
    first.wait_exit();
    let (pending, undelivered) = client.consumer_backlog("EVENTS", CONSUMER);
    assert!(
        pending + undelivered as usize > 0,
        "the daemon was killed with work outstanding"
    );

    let mut second = command.start();
    let records = wait_covered(&mut second, &out, &expected);
    let all = seqs(&records);
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique, expected, "every detection, none invented");
    eprintln!(
        "{} detections, {} duplicates after kill -9 ({pending} pending, {undelivered} undelivered at the kill)",
        all.len(),
        all.len() - unique.len()
    );
    second.stop();
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing_and_readiness_follows_the_connection() {
    let mut nats = NatsServer::start();
    let client = nats.client();
    client.create_stream("EVENTS", &["events.>"]);
    let dir = tempdir();
    let out = dir.path().join("detections.ndjson");
    let mut daemon = daemon(dir.path(), &nats.url("events.>"), &out).start();
    let (payloads, expected) = events(2_000);
    let (before, after) = payloads.split_at(1_000);
    client.publish_all("events.windows", before);
    drop(client);
    nats.kill();
    daemon.wait_for("/readyz 503 while the broker is down", |d| {
        let answer = d.get("/readyz");
        (answer.status == 503).then_some(answer.body)
    });
    nats.restart();
    daemon.wait_for("/readyz 200 after the reconnect", |d| {
        (d.get("/readyz").status == 200).then_some(())
    });
    nats.client().publish_all("events.windows", after);
    wait_covered(&mut daemon, &out, &expected);
    let connected = format!(
        "rsigma_nats_connected{{server=\"127.0.0.1:{}\"}}",
        nats.port
    );
    assert_eq!(daemon.metrics().get(&connected), 1.0);
    daemon.stop();
}

#[test]
fn two_daemons_in_one_consumer_group_split_the_stream() {
    let nats = NatsServer::start();
    let client = nats.client();
    client.create_stream("EVENTS", &["events.>"]);
    let dir = tempdir();
    let (out_a, out_b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    let group = |out: &Path| {
        daemon(dir.path(), &nats.url("events.>"), out).env("RSIGMA_CONSUMER_GROUP", "soc")
    };
    let mut a = group(&out_a).start();
    let mut b = group(&out_b).start();
    let (payloads, expected) = events(8_000);
    client.publish_all("events.windows", &payloads);
    eventually("every detection across the group", || {
        assert!(
            !a.has_exited() && !b.has_exited(),
            "{}{}",
            a.logs(),
            b.logs()
        );
        let seen: BTreeSet<u64> = seqs(&read_ndjson(&out_a))
            .into_iter()
            .chain(seqs(&read_ndjson(&out_b)))
            .collect();
        (seen == expected).then_some(())
    });
    let (share_a, share_b) = (read_ndjson(&out_a).len(), read_ndjson(&out_b).len());
    assert!(
        share_a > 0 && share_b > 0,
        "each daemon got a share: {share_a} / {share_b}"
    );
    assert_eq!(client.consumer_backlog("EVENTS", "soc").1, 0);
    a.stop();
    b.stop();
}

#[test]
fn replay_from_a_sequence_or_a_time_and_the_state_table() {
    let nats = NatsServer::start();
    let client = nats.client();
    client.create_stream("EVENTS", &["events.>"]);
    let (payloads, expected) = events(100);
    client.publish_all("events.windows", &payloads);
    let dir = tempdir();
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let input = nats.url("events.>");

    // Resume (no replay flag) reads everything and saves its position.
    let all = dir.path().join("all.ndjson");
    let mut first = daemon(dir.path(), &input, &all)
        .args(["--state-db", state])
        .start();
    wait_covered(&mut first, &all, &expected);
    first.stop();

    // Stream sequence 51 holds the event with seq 50.
    let from_sequence = dir.path().join("from-sequence.ndjson");
    let later: BTreeSet<u64> = expected.iter().copied().filter(|s| *s >= 50).collect();
    let mut replay = daemon(dir.path(), &input, &from_sequence)
        .args(["--replay-from-sequence", "51", "--state-db", state])
        .start();
    let records = wait_covered(&mut replay, &from_sequence, &later);
    eventually("the replay consumed", || {
        (client.consumer_backlog("EVENTS", CONSUMER) == (0, 0)).then_some(())
    });
    replay.stop();
    assert_eq!(seqs(&records).into_iter().collect::<BTreeSet<_>>(), later);
    assert!(
        replay
            .stderr()
            .contains("the replay starts at or before the stored sequence"),
        "a replay behind the stored position starts clean\n{}",
        replay.logs()
    );

    // By time: the publication time of stream sequence 76 (event seq 75).
    let published = client.message_time("EVENTS", 76);
    let from_time = dir.path().join("from-time.ndjson");
    let latest: BTreeSet<u64> = expected.iter().copied().filter(|s| *s >= 75).collect();
    let mut replay = daemon(dir.path(), &input, &from_time)
        .args([
            "--replay-from-time",
            &published,
            "--state-db",
            state,
            "--keep-state",
        ])
        .start();
    let records = wait_covered(&mut replay, &from_time, &latest);
    replay.stop();
    assert_eq!(seqs(&records).into_iter().collect::<BTreeSet<_>>(), latest);
    assert!(
        !replay.stderr().contains("stored correlation state cleared"),
        "--keep-state overrides the table\n{}",
        replay.logs()
    );
}

#[test]
fn a_core_nats_server_without_jetstream_is_a_clear_startup_error() {
    let nats = NatsServer::without_jetstream();
    let dir = tempdir();
    let out = dir.path().join("out.ndjson");
    let finished = daemon(dir.path(), &nats.url("events.>"), &out).run_to_exit();
    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("has no JetStream"),
        "{}",
        finished.stderr
    );
}

#[test]
fn an_unreachable_broker_is_a_clear_startup_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempdir();
    let out = dir.path().join("out.ndjson");
    let url = format!("nats://127.0.0.1:{port}/events.>");
    let finished = daemon(dir.path(), &url, &out).run_to_exit();
    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains(&format!("cannot connect to NATS at 127.0.0.1:{port}")),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_stream_that_overlaps_the_subject_without_covering_it_is_refused() {
    let nats = NatsServer::start();
    nats.client().create_stream("WINDOWS", &["events.windows"]);
    let dir = tempdir();
    let out = dir.path().join("out.ndjson");
    let finished = daemon(dir.path(), &nats.url("events.>"), &out).run_to_exit();
    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(finished.stderr.contains("WINDOWS"), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("without covering it"),
        "{}",
        finished.stderr
    );
}

#[test]
fn credentials_in_a_url_are_refused_without_repeating_them() {
    let dir = tempdir();
    let out = dir.path().join("out.ndjson");
    let finished = daemon(
        dir.path(),
        "nats://alice:hunter2-secret@127.0.0.1:4222/events",
        &out,
    )
    .run_to_exit();
    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("credentials in the URL are refused")
    );
    assert!(!finished.stderr.contains("hunter2"), "{}", finished.stderr);
}

/// Starts a daemon authenticating through `env`, expecting it ready; and
/// one with a wrong secret, expecting exit 3 naming the method but never
/// the secret.
fn authenticates(server: &NatsServer, good: &[(&str, &str)], bad: &[(&str, &str)], method: &str) {
    let dir = tempdir();
    let out = dir.path().join("out.ndjson");
    let with = |env: &[(&str, &str)]| {
        env.iter().fold(
            daemon(dir.path(), &server.url("events.>"), &out),
            |command, (key, value)| command.env(key, value),
        )
    };
    let mut accepted = with(good).start();
    accepted.stop();
    for (_, value) in good {
        assert!(!accepted.logs().contains(value), "a secret in the logs");
    }
    let refused = with(bad).run_to_exit();
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("({method})")),
        "{}",
        refused.stderr
    );
    for (key, value) in bad {
        if *key != "NATS_USER" {
            assert!(
                !refused.stderr.contains(value),
                "the secret was echoed: {}",
                refused.stderr
            );
        }
    }
}

#[test]
fn token_user_password_and_nkey_authentication() {
    let dir = tempdir();
    let token =
        NatsServer::with_config(dir.path(), "authorization { token: \"s3cret-token-1\" }\n");
    authenticates(
        &token,
        &[("NATS_TOKEN", "s3cret-token-1")],
        &[("NATS_TOKEN", "wrong-token-9")],
        "token",
    );
    let users = NatsServer::with_config(
        dir.path(),
        "authorization { users = [ { user: alice, password: \"pw-alice-1\" } ] }\n",
    );
    authenticates(
        &users,
        &[("NATS_USER", "alice"), ("NATS_PASSWORD", "pw-alice-1")],
        &[("NATS_USER", "alice"), ("NATS_PASSWORD", "pw-wrong-9")],
        "user and password",
    );
    let key = nkeys::KeyPair::new_user();
    let other = nkeys::KeyPair::new_user();
    let nkey = NatsServer::with_config(
        dir.path(),
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            key.public_key()
        ),
    );
    let (seed, wrong) = (key.seed().unwrap(), other.seed().unwrap());
    authenticates(
        &nkey,
        &[("NATS_NKEY", &seed)],
        &[("NATS_NKEY", &wrong)],
        "NKey",
    );
}

#[test]
fn a_durable_consumer_of_another_subject_is_refused_not_reused() {
    let nats = NatsServer::start();
    nats.client().create_stream("EVENTS", &["events.>"]);
    let dir = tempdir();
    let out = dir.path().join("out.ndjson");
    let mut first = daemon(dir.path(), &nats.url("events.windows"), &out)
        .args(["--consumer-group", "soc"])
        .start();
    first.stop();
    let finished = daemon(dir.path(), &nats.url("events.>"), &out)
        .args(["--consumer-group", "soc"])
        .run_to_exit();
    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("the durable consumer soc exists for the subject 'events.windows'"),
        "{}",
        finished.stderr
    );
    // And the daemon's own output inside its input subject is refused.
    let finished = daemon(dir.path(), &nats.url("events.>"), &out)
        .args(["--output", &nats.url("events.detections")])
        .run_to_exit();
    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("read its own records back"),
        "{}",
        finished.stderr
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`: (ca, server cert, server key, client cert, client key).
fn certificates(dir: &Path) -> [std::path::PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["rsigma-client".into()]);
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("client.pem", client_cert),
        ("client-key.pem", client_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    })
}

#[test]
fn tls_and_mutual_tls_to_nats() {
    let dir = tempdir();
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(dir.path());
    let tls = |verify: bool| {
        format!(
            "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: {verify} }}\n",
            server_cert.display().to_string(),
            server_key.display().to_string(),
            ca.display().to_string()
        )
    };
    let out = dir.path().join("out.ndjson");
    let (ca, client_cert, client_key) = (
        ca.to_str().unwrap(),
        client_cert.to_str().unwrap(),
        client_key.to_str().unwrap(),
    );

    // Server TLS: the daemon verifies the server with --nats-tls-ca.
    let server = NatsServer::with_config(dir.path(), &tls(false));
    let mut verified = daemon(dir.path(), &server.url("events.>"), &out)
        .args(["--nats-tls-ca", ca, "--nats-require-tls"])
        .start();
    verified.stop();
    let unverified = daemon(dir.path(), &server.url("events.>"), &out).run_to_exit();
    assert_eq!(unverified.code, Some(3), "{}", unverified.stderr);
    assert!(
        unverified.stderr.contains("cannot connect to NATS"),
        "{}",
        unverified.stderr
    );

    // Mutual TLS: a client certificate is required.
    let server = NatsServer::with_config(dir.path(), &tls(true));
    let mut mutual = daemon(dir.path(), &server.url("events.>"), &out)
        .args(["--nats-tls-ca", ca])
        .args(["--nats-tls-cert", client_cert, "--nats-tls-key", client_key])
        .start();
    mutual.stop();
    let anonymous = daemon(dir.path(), &server.url("events.>"), &out)
        .args(["--nats-tls-ca", ca])
        .run_to_exit();
    assert_eq!(anonymous.code, Some(3), "{}", anonymous.stderr);

    // The same from the config file, its paths relative to the file; a
    // certificate without its key is a configuration error.
    let conf = dir.path().join("rsigma.yaml");
    std::fs::write(
        &conf,
        "daemon:\n  nats:\n    tls_ca: ca.pem\n    tls_cert: client.pem\n    tls_key: client-key.pem\n    require_tls: true\n",
    )
    .unwrap();
    let mut from_file = daemon(dir.path(), &server.url("events.>"), &out)
        .arg("-c")
        .arg(&conf)
        .start();
    from_file.stop();
    let half = dir.path().join("half.yaml");
    std::fs::write(&half, "daemon:\n  nats:\n    tls_cert: client.pem\n").unwrap();
    let half_pair = daemon(dir.path(), &server.url("events.>"), &out)
        .arg("-c")
        .arg(&half)
        .run_to_exit();
    assert_eq!(half_pair.code, Some(3), "{}", half_pair.stderr);
    assert!(
        half_pair
            .stderr
            .contains("daemon.nats.tls_cert and daemon.nats.tls_key must be set together"),
        "{}",
        half_pair.stderr
    );

    // --nats-require-tls refuses a plaintext server.
    let plain = NatsServer::start();
    let refused = daemon(dir.path(), &plain.url("events.>"), &out)
        .arg("--nats-require-tls")
        .run_to_exit();
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("cannot connect to NATS"),
        "{}",
        refused.stderr
    );
}

#[test]
fn consumer_group_and_ack_wait_from_the_config_file_and_flags_over_it() {
    let dir = tempdir();
    let server = NatsServer::start();
    let out = dir.path().join("out.ndjson");
    let conf = dir.path().join("rsigma.yaml");
    std::fs::write(
        &conf,
        "daemon:\n  nats:\n    consumer_group: from-file\n    ack_wait: 7s\n",
    )
    .unwrap();
    let client = server.client();
    client.create_stream("EVENTS", &["events.>"]);

    let mut from_file = daemon(dir.path(), &server.url("events.>"), &out)
        .arg("-c")
        .arg(&conf)
        .start();
    from_file.stop();
    assert_eq!(
        client.consumer_ack_wait("EVENTS", "from-file"),
        Some(Duration::from_secs(7))
    );

    let mut from_flags = daemon(dir.path(), &server.url("events.>"), &out)
        .arg("-c")
        .arg(&conf)
        .args(["--consumer-group", "from-flag", "--nats-ack-wait", "9"])
        .start();
    from_flags.stop();
    assert_eq!(
        client.consumer_ack_wait("EVENTS", "from-flag"),
        Some(Duration::from_secs(9))
    );

    std::fs::write(&conf, "daemon:\n  nats:\n    ack_wait: 500ms\n").unwrap();
    let too_short = daemon(dir.path(), &server.url("events.>"), &out)
        .arg("-c")
        .arg(&conf)
        .run_to_exit();
    assert_eq!(too_short.code, Some(3), "{}", too_short.stderr);
    assert!(
        too_short.stderr.contains("daemon.nats.ack_wait"),
        "{}",
        too_short.stderr
    );
}

/// A JWT signed by `issuer`, as nats-server's operator mode reads them.
fn jwt(claims: Value, issuer: &nkeys::KeyPair) -> String {
    use base64::Engine;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = encode(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{body}");
    let signature = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", encode(&signature))
}

/// A `.creds` file: the user's JWT and NKey seed.
fn write_creds(path: &Path, user_jwt: &str, user: &nkeys::KeyPair) {
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    std::fs::write(path, creds).unwrap();
}

#[test]
fn jwt_credentials_file_authentication() {
    let (operator, account, user) = (
        nkeys::KeyPair::new_operator(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_user(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |issuer: &nkeys::KeyPair, subject: &nkeys::KeyPair, name: &str, nats: Value| {
        json!({"jti": format!("{name}{now}"), "iat": now, "iss": issuer.public_key(),
               "name": name, "sub": subject.public_key(), "nats": nats})
    };
    let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1});
    let operator_jwt = jwt(
        claims(
            &operator,
            &operator,
            "op",
            json!({"type": "operator", "version": 2}),
        ),
        &operator,
    );
    let account_jwt = jwt(
        claims(
            &operator,
            &account,
            "soc",
            json!({"type": "account", "version": 2, "limits": unlimited}),
        ),
        &operator,
    );
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        claims(
            &operator,
            &system,
            "SYS",
            json!({"type": "account", "version": 2}),
        ),
        &operator,
    );
    let user_jwt = jwt(
        claims(
            &account,
            &user,
            "rsigma",
            json!({"type": "user", "version": 2,
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
        ),
        &account,
    );
    let dir = tempdir();
    let server = NatsServer::with_config(
        dir.path(),
        &format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
            acc = account.public_key(),
            sys = system.public_key(),
        ),
    );
    let creds = dir.path().join("rsigma.creds");
    write_creds(&creds, &user_jwt, &user);
    let out = dir.path().join("out.ndjson");
    let mut accepted = daemon(dir.path(), &server.url("events.>"), &out)
        .env("NATS_CREDS", &creds)
        .start();
    accepted.stop();
    // A user the account did not sign is refused.
    let stranger = nkeys::KeyPair::new_account();
    let forged = jwt(
        claims(
            &stranger,
            &user,
            "rsigma",
            json!({"type": "user", "version": 2}),
        ),
        &stranger,
    );
    write_creds(&creds, &forged, &user);
    let refused = daemon(dir.path(), &server.url("events.>"), &out)
        .env("NATS_CREDS", &creds)
        .run_to_exit();
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("(credentials file)"),
        "{}",
        refused.stderr
    );
}

// Dynamic sources from a key-value bucket ────────────────────────────────────

#[test]
fn a_key_value_bucket_feeds_pipeline_vars_and_its_changes_reload_the_rules() {
    let server = NatsServer::start();
    let client = server.client();
    client.kv_put("lists", "admins", "alice\n");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("admin.yml"),
        "title: Admin Logon\nid: dddddddd-1111-4222-8333-444444444444\nlogsource: {product: custom}\ndetection:\n  selection:\n    User|expand: '%admins%'\n  condition: selection\nlevel: high\n",
    )
    .unwrap();
    let pipeline = dir.path().join("pipeline.yml");
    std::fs::write(
        &pipeline,
        "name: kv\nvars:\n  admins: ${source.admins}\ntransformations: []\n",
    )
    .unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let host = server.url("x");
    let host = host.trim_end_matches("/x");
    let declare = |key: &str| {
        std::fs::write(
            conf.join("sources.yaml"),
            format!("sources:\n  - {{id: admins, type: nats, url: \"{host}\", bucket: lists, key: {key}, format: lines, refresh: 1s}}\n"),
        )
        .unwrap();
    };
    let out = dir.path().join("detections.ndjson");
    let daemon = |dir: &Path| {
        DaemonCommand::new(dir)
            .arg("-r")
            .arg(&rules)
            .arg("-p")
            .arg(&pipeline)
            .arg("--source")
            .arg(&conf)
            .args(["--input", "http", "--include-event"])
            .args(["--output", &format!("file://{}", out.display())])
    };
    // A key the bucket does not hold: exit 3 naming bucket and key.
    declare("nobody");
    let refused = daemon(dir.path()).run_to_exit();
    assert_eq!(refused.code, Some(3), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("source \"admins\": bucket \"lists\" has no key \"nobody\""),
        "{}",
        refused.stderr
    );

    declare("admins");
    let mut daemon = daemon(dir.path()).start();
    let logon = |user: &str, n: u64| json!({"User": user, "n": n}).to_string() + "\n";
    daemon.post_events(logon("alice", 1) + &logon("bob", 2), 2);
    let hits = |records: &[Value]| {
        let mut n: Vec<u64> = records
            .iter()
            .map(|r| r["event"]["n"].as_u64().unwrap())
            .collect();
        n.sort();
        n
    };
    assert_eq!(hits(&daemon.wait_records(&out, 1)), [1]);
    let before = daemon.status()["last_reload"].clone();
    client.kv_put("lists", "admins", "alice\nbob\n");
    let reload = daemon.wait_reload_after(&before);
    assert_eq!(reload["ok"], json!(true), "{reload}");
    assert_eq!(reload["trigger"], json!("source"), "{reload}");
    daemon.post_events(logon("bob", 3), 1);
    assert_eq!(hits(&daemon.wait_records(&out, 2)), [1, 3]);
    daemon.stop();
}
