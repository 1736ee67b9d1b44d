//! `ps-webhook`: the mutating admission webhook (`serve`), the offline injector (`inject`) and
//! the local `demo`.
//!
//! Module map (docs/design.md §3):
//! - the pure core lives in the `webhook-core` crate and is re-exported here under its own
//!   module names: [`config`], [`spec`], [`mutate`], [`patch`], [`admission`], [`inject`],
//!   [`kubeyaml`];
//! - serving: [`server`] (TLS listener), [`tls`] (certificate loading and hot reload),
//!   [`selfmanaged`] (certificates the webhook generates, publishes and rotates itself),
//!   [`admin`] (`/livez`, `/readyz`, `/metrics`), [`metrics`], [`reload`] (config file reload),
//!   [`logging`], [`demo`], [`args`] (CLI and `run`).

pub use webhook_core::{admission, config, inject, kubeyaml, mutate, patch, spec, workload};

pub mod admin;
pub mod args;
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod selfmanaged;
pub mod server;
pub mod tls;
