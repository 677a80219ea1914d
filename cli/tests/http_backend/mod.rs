//! A real HTTP/1.1 server on loopback for the enricher and source tests.

#![allow(dead_code)] // each test crate uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

/// A request the backend received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A real HTTP/1.1 server on loopback, one thread per connection:
/// `/slow…` answers after 3 s, `/fail…` 500, `/huge…` 2 MiB, `/text…` a
/// non-JSON body, a path given to [`Backend::set`] its document, anything
/// else `{"owner": "team-<last segment>", "path": "<path>"}`.
pub struct Backend {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    documents: Arc<Mutex<HashMap<String, String>>>,
}

impl Backend {
    pub fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let documents = Arc::new(Mutex::new(HashMap::new()));
        let (recorded, served) = (Arc::clone(&seen), Arc::clone(&documents));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (recorded, served) = (Arc::clone(&recorded), Arc::clone(&served));
                std::thread::spawn(move || serve(stream, &recorded, &served));
            }
        });
        Backend {
            port,
            seen,
            documents,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Serves `body` at `path` from now on.
    pub fn set(&self, path: &str, body: &str) {
        self.documents
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.to_owned());
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, documents: &Mutex<HashMap<String, String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_owned());
        if name == "content-length" {
            length = value.parse().unwrap();
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    seen.lock().unwrap().push(Seen {
        method,
        path: path.clone(),
        headers,
        body: String::from_utf8(body).unwrap(),
    });
    let document = documents.lock().unwrap().get(&path).cloned();
    let (status, body) = if let Some(document) = document {
        ("200 OK", document)
    } else if path.starts_with("/slow") {
        std::thread::sleep(Duration::from_secs(3));
        ("200 OK", "{}".to_owned())
    } else if path.starts_with("/fail") {
        ("500 Internal Server Error", "{}".to_owned())
    } else if path.starts_with("/huge") {
        ("200 OK", format!("\"{}\"", "x".repeat(2 << 20)))
    } else if path.starts_with("/text") {
        ("200 OK", "not json".to_owned())
    } else {
        let owner = path.rsplit('/').next().unwrap_or("");
        (
            "200 OK",
            json!({"owner": format!("team-{owner}"), "path": path}).to_string(),
        )
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}
