//! Cost of one admission through `admission::review` (parse, decide, mutate, serialise), on
//! the fixtures in `bench/webhook/fixtures/`.
//!
//! - `admission_instructions inject|skip N [FILE]`: runs N admissions of that fixture (or of
//!   the AdmissionReview in FILE, which must take that path) and prints a checksum; `bench/webhook/instructions` runs it under callgrind for N and N+100 and reports
//!   (Ir(N+100) − Ir(N)) / 100 instructions per admission, so start-up cancels out.
//! - Without a path (as `cargo bench` runs it): a short wall-clock measurement of both paths.
// A bench binary, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

use std::{hint::black_box, time::Instant};

use webhook_core::{
    admission::{Outcome, review},
    config::Config,
};

/// ps-webhook's allocator (its `main.rs`), so the counts are those of the served admission.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INJECT: &[u8] = include_bytes!("../../../bench/webhook/fixtures/inject.json");
const SKIP: &[u8] = include_bytes!("../../../bench/webhook/fixtures/skip.json");
const CONFIG: &str = "passwordSafe:\n  url: https://ps.example.com/BeyondTrust/api/public/v3\n";

fn fixture(path: &str) -> (&'static [u8], Outcome) {
    match path {
        "inject" => (INJECT, Outcome::Injected),
        "skip" => (SKIP, Outcome::Skipped),
        other => {
            eprintln!("unknown path {other:?}: expected inject or skip");
            std::process::exit(2);
        }
    }
}

/// Checks once that the fixture takes the intended path, so a broken fixture is never measured
/// as a fast error path.
fn check(body: &[u8], want: Outcome, config: &Config) {
    let r = review(body, config);
    if r.outcome != want || r.http_status != 200 {
        eprintln!(
            "fixture answered {} (HTTP {}), expected {}: {}",
            r.outcome.as_str(),
            r.http_status,
            want.as_str(),
            r.message.unwrap_or_default()
        );
        std::process::exit(1);
    }
}

fn run(body: &[u8], config: &Config, n: u64) -> usize {
    let mut sum = 0usize;
    for _ in 0..n {
        let r = review(black_box(body), black_box(config));
        sum = sum.wrapping_add(r.body.len());
    }
    sum
}

fn main() {
    let config = Config::from_yaml(CONFIG).expect("bench configuration is valid");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(path) = args.first() {
        let n: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100);
        let (builtin, want) = fixture(path);
        let body = match args.get(2) {
            Some(file) => std::fs::read(file).unwrap_or_else(|e| {
                eprintln!("cannot read {file}: {e}");
                std::process::exit(2);
            }),
            None => builtin.to_vec(),
        };
        check(&body, want, &config);
        println!("{path} x{n}: checksum {}", run(&body, &config, n));
        return;
    }
    for path in ["inject", "skip"] {
        let (body, want) = fixture(path);
        check(body, want, &config);
        run(body, &config, 1_000);
        let n = 20_000;
        let start = Instant::now();
        black_box(run(body, &config, n));
        let per = start.elapsed() / n as u32;
        println!(
            "{path:>6}: {:>8.2} µs per admission ({} byte request)",
            per.as_secs_f64() * 1e6,
            body.len()
        );
    }
}
