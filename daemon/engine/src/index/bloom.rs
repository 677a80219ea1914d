//! Bloom filters that let the prefilter skip a field's automaton scan.
//!
//! A literal can only occur in a value if the literal's first [`GRAM`] bytes
//! occur there. Each filter holds those first bytes of every literal of one
//! scope; a value none of whose windows of [`GRAM`] bytes (ASCII-lowercased)
//! is in the filter cannot contain any of the scope's literals, and its scan
//! is skipped. A false positive only costs the scan the filter tried to
//! save, so the filter never changes which rules are candidates.
//!
//! A scope with a literal shorter than [`GRAM`] bytes gets no filter (it is
//! always scanned), and so do the scopes the memory budget does not reach:
//! scopes are served from the fewest literals up, at [`BITS_PER_LITERAL`]
//! bits per literal, since small scopes are the ones whose values most often
//! hold none of their literals.

use std::collections::HashMap;

use super::requirement::Scope;

/// Bytes of each literal the filters hold.
pub(crate) const GRAM: usize = 4;

/// Bits per literal: about a 1% false-positive rate with [`PROBES`] probes.
const BITS_PER_LITERAL: usize = 10;

/// Bit probes per gram.
const PROBES: u32 = 3;

/// Smallest filter, in bits.
const MIN_BITS: usize = 64;

/// A Bloom filter over the first [`GRAM`] bytes of a scope's literals.
#[derive(Debug, Clone)]
pub(crate) struct Bloom {
    bits: Vec<u64>,
    /// `bits.len() * 64 - 1`: the bit count is a power of two.
    mask: u64,
}

fn gram_hash(gram: u32) -> u64 {
    // A multiplicative hash; the high and low halves give two probes that
    // combine into the rest (Kirsch-Mitzenmacher).
    u64::from(gram).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(gram) << 17)
}

fn gram_of(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([
        bytes[0].to_ascii_lowercase(),
        bytes[1].to_ascii_lowercase(),
        bytes[2].to_ascii_lowercase(),
        bytes[3].to_ascii_lowercase(),
    ])
}

impl Bloom {
    fn with_bits(bits: usize) -> Bloom {
        let bits = bits.max(MIN_BITS).next_power_of_two();
        Bloom {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
        }
    }

    fn probes(&self, gram: u32) -> impl Iterator<Item = u64> + '_ {
        let hash = gram_hash(gram);
        let (h1, h2) = (hash >> 32, hash | 1);
        (0..u64::from(PROBES)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & self.mask)
    }

    fn insert(&mut self, gram: u32) {
        let probes: Vec<u64> = self.probes(gram).collect();
        for bit in probes {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn contains(&self, gram: u32) -> bool {
        self.probes(gram)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// False only when no literal of the scope can occur in `haystack`.
    pub(crate) fn may_match(&self, haystack: &str) -> bool {
        haystack
            .as_bytes()
            .windows(GRAM)
            .any(|window| self.contains(gram_of(window)))
    }

    /// Bytes held.
    pub(crate) fn memory_usage(&self) -> usize {
        self.bits.len() * 8
    }
}

/// Shares a memory budget among the scopes that can use a filter.
pub(crate) struct BloomPlan {
    budget_bits: usize,
    requests: Vec<(Scope, Vec<u32>)>,
}

impl BloomPlan {
    pub(crate) fn new(max_bytes: usize) -> BloomPlan {
        BloomPlan {
            budget_bits: max_bytes.saturating_mul(8),
            requests: Vec::new(),
        }
    }

    /// Asks for a filter over `literals`; refused when one is too short.
    pub(crate) fn request(&mut self, scope: Scope, literals: &[String]) {
        if literals.is_empty() || literals.iter().any(|l| l.len() < GRAM) {
            return;
        }
        let mut grams: Vec<u32> = literals.iter().map(|l| gram_of(l.as_bytes())).collect();
        grams.sort_unstable();
        grams.dedup();
        self.requests.push((scope, grams));
    }

    /// Builds the filters the budget allows, smallest scopes first.
    pub(crate) fn build(mut self) -> HashMap<Scope, Bloom> {
        self.requests.sort_by_key(|(_, grams)| grams.len());
        let mut left = self.budget_bits;
        let mut filters = HashMap::new();
        for (scope, grams) in self.requests {
            let bits = (grams.len() * BITS_PER_LITERAL)
                .max(MIN_BITS)
                .next_power_of_two();
            if bits > left {
                break;
            }
            left -= bits;
            let mut bloom = Bloom::with_bits(bits);
            for gram in grams {
                bloom.insert(gram);
            }
            filters.insert(scope, bloom);
        }
        filters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(literals: &[&str], budget: usize) -> Option<Bloom> {
        let mut plan = BloomPlan::new(budget);
        let literals: Vec<String> = literals.iter().map(|s| s.to_string()).collect();
        plan.request(Scope::AnyValue, &literals);
        plan.build().remove(&Scope::AnyValue)
    }

    #[test]
    fn never_misses_a_literal_and_rejects_unrelated_text() {
        let bloom = filter(&["mimikatz", "sekurlsa::", "invoke-"], 1024).unwrap();
        assert!(bloom.may_match("run MIMIKATZ now"));
        assert!(bloom.may_match("x sekurlsa::logonpasswords"));
        assert!(bloom.may_match("Invoke-Expression"));
        assert!(!bloom.may_match("C:\\Windows\\System32\\svchost.exe -k netsvcs"));
        assert!(!bloom.may_match("abc"));
    }

    #[test]
    fn short_literals_and_small_budgets_get_no_filter() {
        assert!(filter(&["cmd", "powershell"], 1024).is_none());
        assert!(filter(&["powershell"], 0).is_none());
        assert!(filter(&["powershell"], 8).is_some());
    }
}
