//! `ps-webhook demo` (being written).

use std::process::ExitCode;

/// Flags of `ps-webhook demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

pub fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the demo is not written yet")
}
