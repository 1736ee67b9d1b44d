//! `ps-webhook`: install the one rustls crypto provider, parse the command line, run.

use std::process::ExitCode;

use clap::Parser;
use ps_webhook::args::Args;

/// mimalloc instead of glibc's malloc: an admission allocates a few dozen small strings and a
/// handful of 2–4 KiB buffers (patch, base64, response, TLS records), and glibc serves the
/// larger ones from its unsorted bins, with consolidation and coalescing on the way — a fifth
/// of an injected admission's instructions (`bench/webhook/split`). mimalloc's per-thread free
/// lists serve both sizes in a few dozen instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("ps-webhook: a rustls crypto provider was already installed");
        return ExitCode::from(2);
    }
    match Args::parse().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ps-webhook: {}", message(&error));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, leaving out a cause its parent already quotes.
fn message(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
