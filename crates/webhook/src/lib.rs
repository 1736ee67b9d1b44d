//! `ps-webhook`: the mutating admission webhook (`serve`), the offline injector (`inject`) and
//! the local `demo`.
//!
//! Module map (see DESIGN.md §2–§4):
//! - pure core, no IO: [`config`] (cluster defaults and policy), [`spec`] (annotations +
//!   config → validated `InjectionSpec`), [`mutate`] (pod + spec → JSON Patch), [`patch`],
//!   [`admission`] (AdmissionReview bytes in → response bytes out), [`inject`] (manifests in →
//!   mutated manifests out), [`kubeyaml`] (manifest streams read and written as kubectl reads them);
//! - serving: [`server`] (TLS listener), [`tls`] (certificate loading and hot reload),
//!   [`selfmanaged`] (certificates the webhook generates, publishes and rotates itself),
//!   [`admin`] (`/livez`, `/readyz`, `/metrics`), [`metrics`], [`reload`] (config file reload),
//!   [`logging`], [`demo`], [`args`] (CLI and `run`).

pub mod admission;
pub mod config;
pub mod inject;
pub mod kubeyaml;
pub mod mutate;
pub mod patch;
pub mod spec;

pub mod admin;
pub mod args;
pub mod demo;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod selfmanaged;
pub mod server;
pub mod tls;
