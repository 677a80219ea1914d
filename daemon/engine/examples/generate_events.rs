//! Writes a deterministic benchmark stream as NDJSON to stdout.
//!
//! `cargo run --release -p rsigma-engine --example generate_events -- windows 100000 > windows.ndjson`
//!
//! Streams: `windows` (Sysmon, Security, PowerShell and System records, see
//! `benches/support/windows_events.rs`) and `mixed` (Linux auditd, AWS,
//! Azure and GCP audit logs, web proxy logs, see
//! `benches/support/mixed_events.rs`). Used by `tests/bench/sigmahq-scale.sh`.

use std::io::{BufWriter, Write};

#[path = "../benches/support/mixed_events.rs"]
mod mixed_events;
#[path = "../benches/support/windows_events.rs"]
mod windows_events;

/// The seed the benchmarks use, so the files match their in-memory streams.
const SEED: u64 = 0x5167_4D41_2024_0514;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let stream = args.next().unwrap_or_else(|| "windows".to_owned());
    let count: usize = args
        .next()
        .map(|n| {
            n.parse().unwrap_or_else(|_| {
                eprintln!("COUNT must be a number, not '{n}'");
                std::process::exit(3)
            })
        })
        .unwrap_or(100_000);
    let events = match stream.as_str() {
        "windows" => windows_events::generate(SEED, count),
        "mixed" => mixed_events::generate(SEED, count),
        other => {
            eprintln!("unknown stream '{other}': use windows or mixed");
            std::process::exit(3);
        }
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for event in events {
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
