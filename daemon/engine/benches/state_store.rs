//! Criterion benchmark: the SQLite correlation state store.
//!
//! Run with `cargo bench -p rsigma-engine --bench state_store`.
//!
//! The snapshot holds 10,000 groups (10 correlations of 1,000 groups), each
//! group with a two-field key and an `event_count`-like state of 10
//! timestamps (about 2.2 MB of JSON in all). The database lives in a
//! temporary directory (so on whatever file system `$TMPDIR` is), and every
//! save pays the real `synchronous=FULL` fsyncs and the WAL checkpoint.
//!
//! * `state_store/save_10k_groups`: [`StateStore::save`] replacing a stored
//!   snapshot of the same size (the steady state of the periodic save).
//! * `state_store/load_10k_groups`: [`StateStore::load`] of that snapshot
//!   (what a restart pays).
//!
//! Throughput is reported in groups (elements) per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rsigma_engine::state::{CorrelationSnapshot, GroupSnapshot, StateSnapshot, StateStore};
use serde_json::json;

const CORRELATIONS: usize = 10;
const GROUPS_PER_CORRELATION: usize = 1_000;

fn snapshot() -> StateSnapshot {
    StateSnapshot {
        saved_at_ms: 1_715_000_000_000,
        correlations: (0..CORRELATIONS)
            .map(|c| CorrelationSnapshot {
                correlation: format!("c0ffee00-0000-4000-8000-{c:012}"),
                fingerprint: format!("event_count|5m|User,Computer|gte {c}"),
                groups: (0..GROUPS_PER_CORRELATION)
                    .map(|g| GroupSnapshot {
                        group_key: json!([
                            ["User", format!("CORP\\user{g:05}")],
                            ["Computer", format!("WS-{:04}.corp.example.com", g % 512)]
                        ]),
                        state: json!({
                            "timestamps": (0..10_i64)
                                .map(|i| 1_715_000_000_000 + i * 1_500 + g as i64)
                                .collect::<Vec<_>>(),
                        }),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = StateStore::open(&dir.path().join("state.db")).expect("open the store");
    let snapshot = snapshot();
    let stats = store.save(&snapshot).expect("first save");
    eprintln!(
        "state_store: {} correlations, {} groups, {} payload bytes per save",
        stats.correlations, stats.groups, stats.bytes
    );

    let mut group = c.benchmark_group("state_store");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(stats.groups as u64));
    group.bench_function("save_10k_groups", |b| {
        b.iter(|| store.save(black_box(&snapshot)).expect("save"));
    });
    group.bench_function("load_10k_groups", |b| {
        b.iter(|| black_box(store.load().expect("load")));
    });
    group.finish();
    assert_eq!(store.load().expect("load"), Some(snapshot));
}

criterion_group!(benches, bench);
criterion_main!(benches);
