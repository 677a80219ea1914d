//! A tiny fake rsigma daemon for the client tests: a `TcpListener` on
//! 127.0.0.1 (or ::1) answering canned HTTP/1.1 responses from a thread, and
//! recording every request so tests can assert method, path and query.
//! Bodies are sent with a `Content-Length`, or streamed (chunked, or ended by
//! closing the connection) for the `engine tap` tests.

#![allow(dead_code)] // each test crate uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use assert_cmd::Command;

/// One request received by the fake daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...; `TLS` for a connection that opened with a TLS handshake.
    pub method: String,
    /// The request target: path and query, e.g. `/api/v1/reload?expected_hash=x`.
    pub target: String,
    /// The request body.
    pub body: Vec<u8>,
}

impl Request {
    /// `METHOD target`, as in the request line.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// A canned answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// Response body (for [`Framing::Fixed`]).
    pub body: String,
    /// How the body is sent.
    pub framing: Framing,
}

/// Writes a streamed body, piece by piece, through a [`Sink`].
pub type StreamFn = dyn Fn(&mut Sink<'_>) + Send + Sync;

/// How a reply's body is framed.
#[derive(Clone)]
pub enum Framing {
    /// `Content-Length`: [`Reply::body`] in one write.
    Fixed,
    /// `Transfer-Encoding: chunked`: every [`Sink::send`] is one chunk,
    /// flushed at once; the terminating chunk ends the body (unless
    /// [`Sink::abort`] was called).
    Chunked(Arc<StreamFn>),
    /// No length: every [`Sink::send`] is written and flushed at once, and
    /// closing the connection ends the body.
    UntilClose(Arc<StreamFn>),
}

impl std::fmt::Debug for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Framing::Fixed => "Fixed",
            Framing::Chunked(_) => "Chunked(..)",
            Framing::UntilClose(_) => "UntilClose(..)",
        })
    }
}

/// The writing end of a streamed body.
pub struct Sink<'a> {
    stream: &'a TcpStream,
    chunked: bool,
    aborted: bool,
}

impl Sink<'_> {
    /// Sends `data` now (one chunk when chunked). False once the client is gone.
    pub fn send(&mut self, data: &str) -> bool {
        if data.is_empty() || self.aborted {
            return !self.aborted;
        }
        let mut stream = self.stream;
        let written = if self.chunked {
            write!(stream, "{:x}\r\n{data}\r\n", data.len())
        } else {
            stream.write_all(data.as_bytes())
        };
        written.and_then(|()| stream.flush()).is_ok()
    }

    /// Ends the connection without the terminating chunk: a truncated body.
    pub fn abort(&mut self) {
        self.aborted = true;
    }
}

impl Reply {
    /// A JSON answer with the given status.
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.into(),
            framing: Framing::Fixed,
        }
    }

    /// A plain-text answer with the given status.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.into(),
            framing: Framing::Fixed,
        }
    }

    /// A 200 NDJSON answer sent chunked, one chunk per piece, each flushed on its own.
    pub fn ndjson_chunked(pieces: Vec<String>) -> Reply {
        Reply::streamed(
            true,
            Arc::new(move |sink: &mut Sink<'_>| {
                for piece in &pieces {
                    if !sink.send(piece) {
                        return;
                    }
                }
            }),
        )
    }

    /// A 200 NDJSON answer without a length, ended by closing the connection.
    pub fn ndjson_until_close(pieces: Vec<String>) -> Reply {
        Reply::streamed(
            false,
            Arc::new(move |sink: &mut Sink<'_>| {
                for piece in &pieces {
                    if !sink.send(piece) {
                        return;
                    }
                }
            }),
        )
    }

    /// A 200 NDJSON answer whose body `write` produces, chunked or until close.
    pub fn streamed(chunked: bool, write: Arc<StreamFn>) -> Reply {
        Reply {
            status: 200,
            content_type: "application/x-ndjson",
            body: String::new(),
            framing: if chunked {
                Framing::Chunked(write)
            } else {
                Framing::UntilClose(write)
            },
        }
    }
}

/// Decides the reply to a request; gets the request and its index (0-based).
type Handler = dyn Fn(&Request, usize) -> Reply + Send + Sync;

/// A running fake daemon. Its thread lives until the test process exits.
pub struct FakeDaemon {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeDaemon {
    /// Starts a fake daemon on 127.0.0.1 with an ephemeral port.
    pub fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> FakeDaemon {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Self::serve(listener, Arc::new(handler))
    }

    /// Starts a fake daemon on [::1], or returns `None` when IPv6 loopback is unavailable.
    pub fn start_v6(
        handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Option<FakeDaemon> {
        let listener = TcpListener::bind("[::1]:0").ok()?;
        Some(Self::serve(listener, Arc::new(handler)))
    }

    /// Starts a fake daemon that always gives the same reply.
    pub fn always(reply: Reply) -> FakeDaemon {
        Self::start(move |_, _| reply.clone())
    }

    fn serve(listener: TcpListener, handler: Arc<Handler>) -> FakeDaemon {
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let count = AtomicUsize::new(0);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let index = count.fetch_add(1, Ordering::SeqCst);
                handle(stream, index, &*handler, &recorded);
            }
        });
        FakeDaemon { addr, requests }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The request lines (`METHOD target`) received so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Request::line).collect()
    }
}

/// Serves one connection: one request, one reply, then close.
fn handle(stream: TcpStream, index: usize, handler: &Handler, recorded: &Mutex<Vec<Request>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut first = [0u8; 1];
    if matches!(stream.peek(&mut first), Ok(1) if first[0] == 0x16) {
        // A TLS ClientHello: record it and hang up.
        recorded.lock().unwrap().push(Request {
            method: "TLS".into(),
            target: String::new(),
            body: Vec::new(),
        });
        return;
    }
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    let _ = reader.read_exact(&mut body);
    let request = Request {
        method,
        target,
        body,
    };
    let reply = handler(&request, index);
    recorded.lock().unwrap().push(request);
    let (framing_header, write) = match &reply.framing {
        Framing::Fixed => (format!("Content-Length: {}", reply.body.len()), None),
        Framing::Chunked(write) => ("Transfer-Encoding: chunked".to_owned(), Some((true, write))),
        Framing::UntilClose(write) => (String::new(), Some((false, write))),
    };
    let mut response = format!(
        "HTTP/1.1 {} Canned\r\nContent-Type: {}\r\n",
        reply.status, reply.content_type
    );
    if !framing_header.is_empty() {
        response.push_str(&framing_header);
        response.push_str("\r\n");
    }
    response.push_str("Connection: close\r\n\r\n");
    if write.is_none() {
        response.push_str(&reply.body);
    }
    let mut out = &stream;
    if out.write_all(response.as_bytes()).is_err() || out.flush().is_err() {
        return;
    }
    if let Some((chunked, write)) = write {
        let mut sink = Sink {
            stream: &stream,
            chunked,
            aborted: false,
        };
        write(&mut sink);
        if chunked && !sink.aborted {
            let _ = out.write_all(b"0\r\n\r\n");
            let _ = out.flush();
        }
    }
    // Closing the connection ends an until-close body (and a fixed one too).
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// A status object as the daemon sends it, with the given `last_reload`.
pub fn status_json(last_reload: &str) -> String {
    format!(
        r#"{{"version":"0.1.0","uptime_secs":12,"ready":true,"input":"http","rules":{{"detection":10,"correlation":1,"filters":0}},"rules_hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","rules_loaded_at":"2024-05-01T10:00:00Z","last_reload":{last_reload},"events_processed":100,"parse_errors":2,"detection_matches":5,"correlation_matches":1}}"#
    )
}

/// The `rsigma` binary, run in `cwd` with `HOME` and `XDG_CONFIG_HOME` pointing
/// at `home` (so no user config file is found) and without proxy variables.
pub fn isolated(cwd: &Path, home: &Path) -> Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rsigma"));
    crate::common::isolate(&mut cmd, home).current_dir(cwd);
    Command::from_std(cmd)
}

/// Temporary working and home directories for [`isolated`].
pub struct Sandbox {
    /// The working directory.
    pub cwd: tempfile::TempDir,
    /// `HOME` (and `XDG_CONFIG_HOME` = `HOME/.config`).
    pub home: tempfile::TempDir,
}

impl Sandbox {
    /// Two fresh, empty directories.
    pub fn new() -> Sandbox {
        Sandbox {
            cwd: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `rsigma` with `args`, isolated in this sandbox.
    pub fn rsigma(&self, args: &[&str]) -> Command {
        let mut cmd = isolated(self.cwd.path(), self.home.path());
        cmd.args(args);
        cmd
    }
}
