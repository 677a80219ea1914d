//! Where the benches find the SigmaHQ corpus: `RSIGMA_SIGMAHQ_DIR`, else
//! `shared/corpus/sigmahq` beside the checkout.

use std::path::PathBuf;

/// SigmaHQ's `rules/windows`, when the corpus is there.
pub fn windows_rules_dir() -> Option<PathBuf> {
    let root = std::env::var_os("RSIGMA_SIGMAHQ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sigmahq")
        });
    let dir = root.join("rules/windows");
    dir.is_dir().then_some(dir)
}
