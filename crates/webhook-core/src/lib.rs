//! The admission core of ps-injector: bytes and typed values in, bytes and typed values out.
//!
//! - [`config`]: cluster defaults and tenant policy, parsed from YAML text;
//! - [`spec`]: pod annotations + configuration → a validated `InjectionSpec`, or a denial naming
//!   the annotation and the fix;
//! - [`mutate`]: pod + spec → the JSON Patch that only adds;
//! - [`patch`]: JSON Patch operations and pointers;
//! - [`pod`]: the pod as the core reads it, a borrowed model parsed in the request's single pass;
//! - [`admission`]: AdmissionReview bytes in → response bytes out (the webhook's whole decision);
//! - [`inject`]: manifests in → mutated manifests out (`ps-webhook inject`, the same decision);
//! - [`kubeyaml`]: manifest streams read and written as kubectl reads them;
//! - [`workload`]: the built-in workload kinds, and the warning for annotations on a workload's
//!   own metadata (`inject` and the warning-only admission entry).
//!
//! # The purity rule
//!
//! Everything here is a function of its arguments: no IO (files, network, standard streams,
//! environment, processes), no clock, no randomness, no global or thread-local state, no async.
//! `ps-webhook` does the IO and the serving around it; the offline `inject` and the webhook run
//! exactly the same code, and every test here is a plain function call.
//!
//! The rule is checked, not only written:
//! - the crate's dependencies contain no async runtime, HTTP, TLS or network crate, and
//!   `tests/purity.rs` fails if `cargo tree -e normal` ever shows one (tokio, hyper, http,
//!   reqwest, rustls, axum, tower, ...);
//! - `clippy.toml` next to this crate's manifest refuses the standard library's file, clock,
//!   environment, process, thread and global-state APIs (`cargo clippy -D warnings` is a gate).
//!   Tests, which read fixtures, opt out per file.

pub mod admission;
pub mod config;
pub mod inject;
pub mod kubeyaml;
pub mod mutate;
pub mod patch;
pub mod pod;
pub mod spec;
pub mod workload;
