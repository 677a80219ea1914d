//! Criterion bench for the SQLite state store (placeholder, filled in below).
fn main() {}
