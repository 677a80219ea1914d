//! The cost of enrichment: detections per second through `rsigma engine
//! daemon` without enrichers, with a template enricher, and with an http
//! enricher against a real HTTP server on loopback (every detection a
//! request, then with a cache), in the same run.
//!
//! Run with `cargo bench -p rsigma-cli --bench enrichment_throughput`
//! (release build). Every event matches the one rule, so detections per
//! second is events per second; the time runs from the first POST until
//! the output file holds every detection.

#[path = "support/daemon.rs"]
#[allow(dead_code)]
mod daemon;

#[path = "../tests/http_backend/mod.rs"]
mod http_backend;

use std::path::Path;
use std::time::{Duration, Instant};

const DETECTIONS: usize = 20_000;
const HOSTS: usize = 100;

const RULE: &str = r#"
title: Every Bench Event
id: cccccccc-1111-4222-8333-444444444444
logsource: {product: bench}
detection:
    selection:
        Marker: bench
    condition: selection
level: low
tags: [attack.t1000]
"#;

fn lines(out: &Path) -> usize {
    std::fs::read(out).map_or(0, |bytes| memchr::memchr_iter(b'\n', &bytes).count())
}

/// Detections per second with `enrichers` (none: no `--enrichers`).
fn run(dir: &Path, name: &str, enrichers: Option<&str>) -> f64 {
    let out = dir.join(format!("{name}.ndjson"));
    let mut args = vec![
        "--input".to_owned(),
        "http".to_owned(),
        "--include-event".to_owned(),
        "--output".to_owned(),
        format!("file://{}", out.display()),
    ];
    if let Some(enrichers) = enrichers {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, enrichers).unwrap();
        args.extend(["--enrichers".to_owned(), file.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (child, base) = daemon::start(&dir.join("rules"), &args);
    let events: Vec<String> = (0..DETECTIONS)
        .map(|n| {
            serde_json::json!({"Marker": "bench", "Host": format!("host-{}", n % HOSTS), "n": n})
                .to_string()
        })
        .collect();
    let http = reqwest::blocking::Client::new();
    let started = Instant::now();
    for batch in events.chunks(1_000) {
        let answer = http
            .post(format!("{base}/api/v1/events"))
            .body(batch.join("\n"))
            .send()
            .expect("posting");
        assert!(answer.status().is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while lines(&out) < DETECTIONS {
        assert!(Instant::now() < deadline, "{name}: detections missing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    daemon::stop(child);
    let text = std::fs::read_to_string(&out).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    if enrichers.is_some() {
        assert!(first["enrichments"].is_object(), "{name}: {first}");
    }
    DETECTIONS as f64 / elapsed.as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/every.yml"), RULE).unwrap();
    let backend = http_backend::Backend::start();
    let http = |cache: &str| {
        format!(
            "max_concurrent_enrichments: 64\nenrichers:\n  - {{id: owner, kind: detection, type: http, inject_field: owner, url: \"{}${{detection.event.Host}}\", extract: .owner{cache}}}\n",
            backend.url("/asset/")
        )
    };
    let template = "enrichers:\n  - {id: runbook, kind: detection, type: template, inject_field: runbook, template: \"https://wiki/${detection.rule.id}/${detection.event.Host}\"}\n";
    println!(
        "enrichment overhead, {DETECTIONS} detections over the HTTP input, one daemon (2 workers):"
    );
    for (name, enrichers) in [
        ("none", None),
        ("template", Some(template.to_owned())),
        ("http, a request per detection", Some(http(""))),
        (
            "http, cache_ttl 1h (100 distinct URLs)",
            Some(http(", cache_ttl: 1h")),
        ),
    ] {
        let slug: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
        let rate = run(dir.path(), &slug, enrichers.as_deref());
        println!("  {name:<42} {rate:>10.0} detections/s");
    }
    println!("  (backend requests served: {})", backend.seen().len());
}
