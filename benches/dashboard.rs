//! Dashboard benchmarks (`cargo bench --bench dashboard`); figures in docs/benchmarks.md.

fn main() {}
