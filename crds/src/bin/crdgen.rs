//! Writes the generated CRD, RBAC and chart files (see
//! `rsigma_crds::generate::files`) under the workspace root.
//!
//! Usage: `cargo run -p rsigma-crds --bin crdgen [--check] [ROOT]`. ROOT
//! defaults to the workspace root; `--check` writes nothing and exits 1 when
//! a file differs.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut check = false;
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [ROOT]");
                return ExitCode::SUCCESS;
            }
            _ => root = PathBuf::from(arg),
        }
    }
    let mut stale = 0;
    for f in rsigma_crds::generate::files() {
        let path = root.join(&f.path);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(f.content.as_str()) {
            continue;
        }
        if check {
            eprintln!("stale: {}", f.path.display());
            stale += 1;
            continue;
        }
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("crdgen: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::write(&path, &f.content) {
            eprintln!("crdgen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", f.path.display());
    }
    if stale > 0 {
        eprintln!(
            "{stale} generated file(s) differ: run `{}`",
            rsigma_crds::generate::REGENERATE
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
