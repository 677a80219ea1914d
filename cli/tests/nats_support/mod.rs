//! A real `nats-server` with JetStream on a loopback port (Debian's
//! `nats-server` package; `.ci/run` installs it), and a JetStream client for
//! the tests' side: publish events, read what the daemon published, inspect
//! the consumer.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;

/// A running `nats-server -js`, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    /// The client port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
    jetstream: bool,
}

fn executable() -> String {
    std::env::var("RSIGMA_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl NatsServer {
    /// A server with JetStream and no authentication.
    pub fn start() -> NatsServer {
        NatsServer::launch(None, true)
    }

    /// A core NATS server without JetStream.
    pub fn without_jetstream() -> NatsServer {
        NatsServer::launch(None, false)
    }

    /// A server with JetStream configured by `config` (authorization, TLS):
    /// the text of a nats-server configuration file.
    pub fn with_config(dir: &Path, config: &str) -> NatsServer {
        let path = dir.join(format!("nats-{}.conf", free_port()));
        std::fs::write(&path, config).expect("writing the nats-server config");
        NatsServer::launch(Some(path), true)
    }

    fn launch(config: Option<PathBuf>, jetstream: bool) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("a store directory"),
            config,
            jetstream,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let mut command = Command::new(executable());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(self.store.path());
        }
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let log = self.store.path().join("nats-server.log");
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the server's log file"))
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {} ({err}): install Debian's nats-server package \
                     (.ci/run does) or set RSIGMA_NATS_SERVER",
                    executable()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// `nats://127.0.0.1:PORT/SUBJECT`.
    pub fn url(&self, subject: &str) -> String {
        format!("nats://127.0.0.1:{}/{subject}", self.port)
    }

    /// A client connected with `options`.
    pub fn client_with(&self, options: async_nats::ConnectOptions) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let address = format!("127.0.0.1:{}", self.port);
        let js = runtime.block_on(async {
            let client = options
                .connect(address)
                .await
                .expect("connecting the test client");
            jetstream::new(client)
        });
        Client { js, runtime }
    }

    /// A client without credentials.
    pub fn client(&self) -> Client {
        self.client_with(async_nats::ConnectOptions::new())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The tests' JetStream client (blocking calls on a runtime of its own).
pub struct Client {
    js: jetstream::Context,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// Puts `value` at `key` of the key-value bucket `bucket` (created when
    /// missing). The bucket's stream is made by hand, as the client's
    /// `create_key_value` does not read the answers of Debian's 2.9 server.
    pub fn kv_put(&self, bucket: &str, key: &str, value: &str) {
        self.runtime.block_on(async {
            let stream = format!("KV_{bucket}");
            if self.js.get_stream(&stream).await.is_err() {
                self.js
                    .create_stream(jetstream::stream::Config {
                        name: stream,
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 1,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        ..Default::default()
                    })
                    .await
                    .expect("creating the bucket's stream");
            }
            self.js
                .publish(format!("$KV.{bucket}.{key}"), value.to_owned().into())
                .await
                .expect("putting the value")
                .await
                .expect("the put acknowledged");
        });
    }

    /// Creates a stream `name` holding `subjects`.
    pub fn create_stream(&self, name: &str, subjects: &[&str]) {
        self.runtime
            .block_on(self.js.create_stream(jetstream::stream::Config {
                name: name.into(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }))
            .expect("creating the stream");
    }

    /// Publishes each payload to `subject`, waiting for every ack (500 at
    /// a time: the client bounds the publishes awaiting their ack).
    pub fn publish_all(&self, subject: &str, payloads: &[Vec<u8>]) {
        self.runtime.block_on(async {
            for chunk in payloads.chunks(500) {
                let mut acks = Vec::new();
                for payload in chunk {
                    acks.push(
                        self.js
                            .publish(subject.to_owned(), payload.clone().into())
                            .await
                            .expect("publishing"),
                    );
                }
                for ack in acks {
                    ack.await.expect("publish acknowledged");
                }
            }
        });
    }

    /// Every message of the stream holding `subject`, parsed as JSON.
    pub fn messages(&self, subject: &str) -> Vec<Value> {
        self.runtime.block_on(async {
            let Ok(name) = self.js.stream_by_subject(subject).await else {
                return Vec::new();
            };
            let mut stream = self.js.get_stream(&name).await.expect("the stream");
            let info = stream.info().await.expect("stream info").clone();
            let mut messages = Vec::new();
            for sequence in info.state.first_sequence..=info.state.last_sequence {
                if info.state.messages == 0 {
                    break;
                }
                if let Ok(message) = stream.get_raw_message(sequence).await {
                    messages.push(
                        serde_json::from_slice(&message.payload).unwrap_or_else(|err| {
                            panic!("a message on {subject} is not JSON: {err}")
                        }),
                    );
                }
            }
            messages
        })
    }

    /// How many messages the stream holding `subject` stores.
    pub fn message_count(&self, subject: &str) -> u64 {
        self.runtime.block_on(async {
            let name = self.js.stream_by_subject(subject).await.expect("a stream");
            let mut stream = self.js.get_stream(&name).await.expect("the stream");
            stream.info().await.expect("stream info").state.messages
        })
    }

    /// (ack pending, not yet delivered) of a durable consumer.
    pub fn consumer_backlog(&self, stream: &str, consumer: &str) -> (usize, u64) {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(stream).await.expect("the stream");
            let info = stream.consumer_info(consumer).await.expect("the consumer");
            (info.num_ack_pending, info.num_pending)
        })
    }

    /// The ack wait of a durable consumer, or None when it does not exist.
    pub fn consumer_ack_wait(&self, stream: &str, consumer: &str) -> Option<Duration> {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(stream).await.expect("the stream");
            let info = stream.consumer_info(consumer).await.ok()?;
            Some(info.config.ack_wait)
        })
    }

    /// When JetStream stored message `sequence` of `stream`, in RFC 3339.
    pub fn message_time(&self, stream: &str, sequence: u64) -> String {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(stream).await.expect("the stream");
            let message = stream.get_raw_message(sequence).await.expect("the message");
            let nanos = i64::try_from(message.time.unix_timestamp_nanos()).expect("in range");
            chrono::DateTime::from_timestamp_nanos(nanos)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        })
    }

    /// The name of the stream holding `subject`.
    pub fn stream_of(&self, subject: &str) -> Option<String> {
        self.runtime
            .block_on(self.js.stream_by_subject(subject))
            .ok()
    }
}

/// `count` process-creation events with `seq` 0..count; every fourth runs
/// whoami.exe (one detection by the sample rules), the others notepad.exe.
pub fn events(count: u64) -> (Vec<Vec<u8>>, std::collections::BTreeSet<u64>) {
    let mut expected = std::collections::BTreeSet::new();
    let payloads = (0..count)
        .map(|seq| {
            let image = if seq % 4 == 0 {
                expected.insert(seq);
                "C:\\Windows\\System32\\whoami.exe"
            } else {
                "C:\\Windows\\System32\\notepad.exe"
            };
            serde_json::json!({"EventID": 1, "Image": image, "seq": seq})
                .to_string()
                .into_bytes()
        })
        .collect();
    (payloads, expected)
}
