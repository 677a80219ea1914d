//! Sliding windows: the per-group aggregation state of each correlation type.
//!
//! Times are event times in milliseconds. A window of length `span` anchored
//! at `now` holds the entries with `time >= now - span`: an entry exactly
//! `span` old is still inside. The anchor is the newest event time the group
//! has seen, so an out-of-order event still inside the window is counted and
//! one older than the window is ignored (and reported as late).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Per-group aggregation state; the variant follows the correlation type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Window {
    /// `event_count`: event times, oldest first.
    Count {
        /// Times in the window, sorted.
        times: VecDeque<i64>,
    },
    /// `value_count`: values with their times, and how often each distinct value is in the window.
    Distinct {
        /// `(time, value)` in the window, sorted by time.
        entries: VecDeque<(i64, String)>,
        /// Occurrences per distinct value: the distinct count is its length.
        counts: HashMap<String, u32>,
    },
    /// `value_sum`, `value_avg`, `value_median`, `value_percentile`.
    Numeric {
        /// `(time, value)` in the window, sorted by time.
        entries: VecDeque<(i64, f64)>,
        /// Running sum of the values in the window.
        sum: f64,
    },
    /// `temporal` and `temporal_ordered`: per referenced rule, the times it matched.
    Temporal {
        /// One sorted list of times per source, in the order the rule lists them.
        per_source: Vec<VecDeque<i64>>,
    },
}

fn insert_sorted<T>(entries: &mut VecDeque<T>, time: i64, item: T, time_of: impl Fn(&T) -> i64) {
    let at = entries.partition_point(|e| time_of(e) <= time);
    entries.insert(at, item);
}

impl Window {
    /// Drops entries older than `now - span`.
    pub fn evict(&mut self, now: i64, span: i64) {
        let oldest = now.saturating_sub(span);
        match self {
            Window::Count { times } => {
                while times.front().is_some_and(|t| *t < oldest) {
                    times.pop_front();
                }
            }
            Window::Distinct { entries, counts } => {
                while entries.front().is_some_and(|(t, _)| *t < oldest) {
                    let (_, value) = entries.pop_front().expect("front exists");
                    if let Some(count) = counts.get_mut(&value) {
                        *count -= 1;
                        if *count == 0 {
                            counts.remove(&value);
                        }
                    }
                }
            }
            Window::Numeric { entries, sum } => {
                while entries.front().is_some_and(|(t, _)| *t < oldest) {
                    let (_, value) = entries.pop_front().expect("front exists");
                    *sum -= value;
                }
                if entries.is_empty() {
                    // Keep floating-point drift from accumulating across windows.
                    *sum = 0.0;
                }
            }
            Window::Temporal { per_source } => {
                for times in per_source {
                    while times.front().is_some_and(|t| *t < oldest) {
                        times.pop_front();
                    }
                }
            }
        }
    }

    /// Adds an `event_count` entry.
    pub fn add_event(&mut self, time: i64) {
        if let Window::Count { times } = self {
            insert_sorted(times, time, time, |t| *t);
        }
    }

    /// Adds a `value_count` entry.
    pub fn add_distinct(&mut self, time: i64, value: String) {
        if let Window::Distinct { entries, counts } = self {
            *counts.entry(value.clone()).or_insert(0) += 1;
            insert_sorted(entries, time, (time, value), |(t, _)| *t);
        }
    }

    /// Adds a numeric entry.
    pub fn add_number(&mut self, time: i64, value: f64) {
        if let Window::Numeric { entries, sum } = self {
            *sum += value;
            insert_sorted(entries, time, (time, value), |(t, _)| *t);
        }
    }

    /// Records that source `source` matched at `time`.
    pub fn add_source(&mut self, time: i64, source: usize) {
        if let Window::Temporal { per_source } = self {
            insert_sorted(&mut per_source[source], time, time, |t| *t);
        }
    }

    /// True when nothing is left in the window.
    pub fn is_empty(&self) -> bool {
        match self {
            Window::Count { times } => times.is_empty(),
            Window::Distinct { entries, .. } => entries.is_empty(),
            Window::Numeric { entries, .. } => entries.is_empty(),
            Window::Temporal { per_source } => per_source.iter().all(VecDeque::is_empty),
        }
    }

    /// Empties the window (the `reset` action).
    pub fn clear(&mut self) {
        match self {
            Window::Count { times } => times.clear(),
            Window::Distinct { entries, counts } => {
                entries.clear();
                counts.clear();
            }
            Window::Numeric { entries, sum } => {
                entries.clear();
                *sum = 0.0;
            }
            Window::Temporal { per_source } => per_source.iter_mut().for_each(VecDeque::clear),
        }
    }

    /// Number of events in the window (`event_count`).
    pub fn count(&self) -> usize {
        match self {
            Window::Count { times } => times.len(),
            _ => 0,
        }
    }

    /// Number of distinct values (`value_count`).
    pub fn distinct(&self) -> usize {
        match self {
            Window::Distinct { counts, .. } => counts.len(),
            _ => 0,
        }
    }

    /// Sum of the values (`value_sum`).
    pub fn sum(&self) -> f64 {
        match self {
            Window::Numeric { sum, .. } => *sum,
            _ => 0.0,
        }
    }

    /// Mean of the values (`value_avg`); `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        match self {
            Window::Numeric { entries, sum } if !entries.is_empty() => {
                Some(*sum / entries.len() as f64)
            }
            _ => None,
        }
    }

    /// The `p`th percentile (0..=100) by linear interpolation between
    /// closest ranks, as numpy's default; `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let Window::Numeric { entries, .. } = self else {
            return None;
        };
        if entries.is_empty() {
            return None;
        }
        let mut values: Vec<f64> = entries.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        let rank = p / 100.0 * (values.len() - 1) as f64;
        let low = rank.floor() as usize;
        let high = rank.ceil() as usize;
        Some(values[low] + (values[high] - values[low]) * (rank - low as f64))
    }

    /// Number of sources that matched in the window (`temporal`).
    pub fn sources_seen(&self) -> usize {
        match self {
            Window::Temporal { per_source } => per_source.iter().filter(|t| !t.is_empty()).count(),
            _ => 0,
        }
    }

    /// True when the sources matched in their listed order within the window
    /// (`temporal_ordered`): there are times t0 <= t1 <= ... with ti a match of source i.
    pub fn in_order(&self) -> bool {
        let Window::Temporal { per_source } = self else {
            return false;
        };
        let mut after = i64::MIN;
        for times in per_source {
            // The earliest match not before the previous source's keeps the
            // most room for the sources after it.
            let at = times.partition_point(|t| *t < after);
            match times.get(at) {
                Some(t) => after = *t,
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_edges_are_inclusive() {
        let mut w = Window::Count {
            times: VecDeque::new(),
        };
        for t in [0, 500, 1000] {
            w.add_event(t);
        }
        w.evict(1000, 1000);
        assert_eq!(w.count(), 3, "an entry exactly one span old is inside");
        w.evict(1001, 1000);
        assert_eq!(w.count(), 2);
    }

    #[test]
    fn out_of_order_entries_stay_sorted() {
        let mut w = Window::Count {
            times: VecDeque::new(),
        };
        for t in [100, 50, 200, 150] {
            w.add_event(t);
        }
        assert_eq!(
            w,
            Window::Count {
                times: VecDeque::from(vec![50, 100, 150, 200])
            }
        );
        w.evict(200, 100);
        assert_eq!(w.count(), 3);
    }

    #[test]
    fn distinct_counts_follow_eviction() {
        let mut w = Window::Distinct {
            entries: VecDeque::new(),
            counts: HashMap::new(),
        };
        w.add_distinct(0, "a".into());
        w.add_distinct(10, "b".into());
        w.add_distinct(20, "a".into());
        assert_eq!(w.distinct(), 2);
        w.evict(30, 15);
        assert_eq!(w.distinct(), 1);
        w.evict(100, 15);
        assert_eq!(w.distinct(), 0);
        assert!(w.is_empty());
    }

    #[test]
    fn numeric_aggregates() {
        let mut w = Window::Numeric {
            entries: VecDeque::new(),
            sum: 0.0,
        };
        for (t, v) in [(0, 4.0), (1, 1.0), (2, 3.0), (3, 2.0)] {
            w.add_number(t, v);
        }
        assert_eq!(w.sum(), 10.0);
        assert_eq!(w.mean(), Some(2.5));
        assert_eq!(w.percentile(50.0), Some(2.5));
        assert_eq!(w.percentile(0.0), Some(1.0));
        assert_eq!(w.percentile(100.0), Some(4.0));
        assert_eq!(w.percentile(25.0), Some(1.75));
        w.evict(3, 1);
        assert_eq!(w.sum(), 5.0);
    }

    #[test]
    fn temporal_order() {
        let mut w = Window::Temporal {
            per_source: vec![VecDeque::new(), VecDeque::new(), VecDeque::new()],
        };
        w.add_source(10, 1);
        w.add_source(20, 0);
        w.add_source(30, 2);
        assert_eq!(w.sources_seen(), 3);
        assert!(!w.in_order(), "source 1 only matched before source 0");
        w.add_source(25, 1);
        assert!(w.in_order());
        // Equal times count as in order.
        let mut w = Window::Temporal {
            per_source: vec![VecDeque::from(vec![5]), VecDeque::from(vec![5])],
        };
        assert!(w.in_order());
        w.clear();
        assert!(w.is_empty());
    }
}
