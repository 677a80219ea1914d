//! The checked-in CRD, RBAC and chart files equal what `crdgen` generates.

use std::path::PathBuf;

use rsigma_crds::generate::{REGENERATE, files};

#[test]
fn generated_files_are_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    for f in files() {
        let path = root.join(&f.path);
        match std::fs::read_to_string(&path) {
            Err(e) => problems.push(format!("{}: cannot read ({e})", f.path.display())),
            Ok(current) if current != f.content => {
                let line = current
                    .lines()
                    .zip(f.content.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| current.lines().count().min(f.content.lines().count()));
                problems.push(format!(
                    "{}: differs from the generated content from line {}\n    checked in: {:?}\n    generated:  {:?}",
                    f.path.display(),
                    line + 1,
                    current.lines().nth(line).unwrap_or("<end of file>"),
                    f.content.lines().nth(line).unwrap_or("<end of file>"),
                ));
            }
            Ok(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "generated files are stale (the Rust types in crds/src changed?):\n  {}\nregenerate them with `{REGENERATE}` and commit the result",
        problems.join("\n  ")
    );
}
