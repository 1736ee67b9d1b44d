//! Self-managed serving certificates (`certificates.mode: selfManaged`, the chart's default):
//! the webhook generates its own CA and serving certificate, keeps them in one Secret, keeps
//! its MutatingWebhookConfiguration's `caBundle` current, and rotates both before they expire
//! without refusing a single admission. Nothing of it is rendered by Helm, so `helm template`
//! output is the same on every render (GitOps-stable).
//!
//! - [`state`]: the pure part: the Secret's content as a typed [`state::CertState`], the bundle,
//!   and [`state::plan`], the rotation step due at a given time (with the reasons for each wait).
//! - [`cluster`]: the thin Kubernetes side: one Secret, one MutatingWebhookConfiguration, one
//!   Lease, each by name (the chart's Role grants nothing more).

pub mod cluster;
pub mod state;

pub use cluster::{Cluster, Settings};
pub use state::{Names, Timing};
