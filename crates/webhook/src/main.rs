//! `ps-webhook`: install the one rustls crypto provider, parse the command line, run.

use std::process::ExitCode;

use clap::Parser;
use ps_webhook::args::Args;

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
            eprintln!("ps-webhook: {error:#}");
            ExitCode::from(1)
        }
    }
}
