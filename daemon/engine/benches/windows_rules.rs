//! Criterion benchmark: the SigmaHQ `rules/windows` set against synthetic Windows events.
//!
//! Run with `cargo bench -p rsigma-engine --bench windows_rules`.
//!
//! The rules are read from `shared/corpus/sigmahq/rules/windows` next to the workspace
//! (`$CARGO_MANIFEST_DIR/../../../shared/corpus/sigmahq`), or from
//! `$RSIGMA_SIGMAHQ_DIR/rules/windows` when that variable points at a SigmaHQ checkout.
//! If the directory is missing the benchmark prints a message and measures nothing.
//!
//! Benchmarks (all single-threaded, so the figures are per core):
//! * `windows_rules/evaluate_into`: evaluate pre-parsed events, reusing one `Scratch` and one
//!   output `Vec` (the engine's hot path).
//! * `windows_rules/parse_only`: `serde_json::from_str` of the NDJSON lines alone, as a
//!   baseline for the next figure.
//! * `windows_rules/parse_and_evaluate`: parse one NDJSON line and evaluate it, i.e. the
//!   end-to-end per-line cost.
//! * `windows_rules_compile/compile`: compile the whole rule set.
//!
//! Throughput is reported in events (elements) per second.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rsigma_engine::{Engine, load_rules};
use serde_json::Value;

#[path = "support/windows_events.rs"]
mod windows_events;

/// Fixed seed so every run measures the same events.
const SEED: u64 = 0x5167_4D41_2024_0514;

/// Events per benchmark iteration.
const EVENT_COUNT: usize = 20_000;

/// Where the SigmaHQ `rules/windows` directory is, if present.
fn rules_dir() -> Option<PathBuf> {
    let (root, origin) = match std::env::var_os("RSIGMA_SIGMAHQ_DIR") {
        Some(dir) => (PathBuf::from(dir), "RSIGMA_SIGMAHQ_DIR"),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sigmahq"),
            "default location",
        ),
    };
    let dir = root.join("rules").join("windows");
    if dir.is_dir() {
        Some(dir.canonicalize().unwrap_or(dir))
    } else {
        eprintln!(
            "windows_rules: SigmaHQ rules not found at {} ({origin}); \
             set RSIGMA_SIGMAHQ_DIR to a SigmaHQ checkout (the directory containing \
             `rules/windows`). Skipping the benchmark.",
            dir.display()
        );
        None
    }
}

fn windows_rules(c: &mut Criterion) {
    let Some(dir) = rules_dir() else {
        return;
    };

    // Load and compile once, reporting the one-off costs.
    let started = Instant::now();
    let loaded = load_rules(&dir);
    let load_time = started.elapsed();
    let started = Instant::now();
    let (engine, compile_errors) = Engine::compile(&loaded.rule_set);
    let compile_time = started.elapsed();
    eprintln!(
        "windows_rules: {} ({} load errors) loaded in {load_time:.2?}; \
         compiled {} rules ({} compile errors) in {compile_time:.2?}",
        dir.display(),
        loaded.errors.len(),
        engine.rule_count(),
        compile_errors.len(),
    );

    // The workload: pre-parsed events and the same events as NDJSON lines.
    let started = Instant::now();
    let events = windows_events::generate(SEED, EVENT_COUNT);
    let lines: Vec<String> = events
        .iter()
        .map(|event| serde_json::to_string(event).expect("serialise event"))
        .collect();
    let bytes: usize = lines.iter().map(|line| line.len() + 1).sum();
    eprintln!(
        "windows_rules: generated {} events ({:.1} MiB NDJSON, {} bytes/event avg) in {:.2?}",
        events.len(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes / events.len().max(1),
        started.elapsed()
    );

    // Information only: how much of the workload matches.
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    let (mut matched_events, mut detections) = (0usize, 0usize);
    let mut per_rule: HashMap<String, usize> = HashMap::new();
    for event in &events {
        out.clear();
        engine.evaluate_into(event, &mut scratch, &mut out);
        matched_events += usize::from(!out.is_empty());
        detections += out.len();
        for detection in &out {
            *per_rule.entry(detection.rule_title.clone()).or_default() += 1;
        }
    }
    eprintln!(
        "windows_rules: {matched_events} of {} events ({:.2}%) produced at least one detection; \
         {detections} detections in total",
        events.len(),
        100.0 * matched_events as f64 / events.len().max(1) as f64
    );
    let mut per_rule: Vec<(String, usize)> = per_rule.into_iter().collect();
    per_rule.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    eprintln!(
        "windows_rules: {} distinct rules fired; most frequent:",
        per_rule.len()
    );
    for (title, count) in per_rule.iter().take(10) {
        eprintln!("windows_rules:   {count:>6}  {title}");
    }

    let mut group = c.benchmark_group("windows_rules");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(events.len() as u64));

    group.bench_function("evaluate_into", |b| {
        let mut scratch = engine.new_scratch();
        let mut out = Vec::new();
        b.iter(|| {
            let mut total = 0usize;
            for event in &events {
                out.clear();
                engine.evaluate_into(black_box(event), &mut scratch, &mut out);
                total += out.len();
            }
            total
        });
    });

    group.bench_function("parse_only", |b| {
        b.iter(|| {
            let mut fields = 0usize;
            for line in &lines {
                let event: Value = serde_json::from_str(black_box(line)).expect("valid JSON");
                fields += event.as_object().map_or(0, |object| object.len());
            }
            fields
        });
    });

    group.bench_function("parse_and_evaluate", |b| {
        let mut scratch = engine.new_scratch();
        let mut out = Vec::new();
        b.iter(|| {
            let mut total = 0usize;
            for line in &lines {
                let event: Value = serde_json::from_str(black_box(line)).expect("valid JSON");
                out.clear();
                engine.evaluate_into(&event, &mut scratch, &mut out);
                total += out.len();
            }
            total
        });
    });
    group.finish();

    let mut group = c.benchmark_group("windows_rules_compile");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("compile", |b| {
        b.iter_with_large_drop(|| Engine::compile(black_box(&loaded.rule_set)));
    });
    group.finish();
}

criterion_group!(benches, windows_rules);
criterion_main!(benches);
