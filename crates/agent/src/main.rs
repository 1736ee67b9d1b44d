//! `ps-agent`: thin entry point; everything else is in the `ps_agent` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One crypto provider for the whole process (ring); the client builds its own TLS config
    // with it too. Ignoring the error keeps an already installed provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = ps_agent::Cli::parse();
    match ps_agent::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(e.exit_code()),
    }
}
