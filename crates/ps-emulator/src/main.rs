//! `ps-emulator`: serves the Password Safe API emulator. See `docs/emulator.md`.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // ring is the only crypto provider of the build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = ps_emulator::Cli::parse();
    ps_emulator::run(cli).await?;
    Ok(())
}
