//! Instruction-count harness (see bench/webhook/README.md); filled in below.
fn main() {}
