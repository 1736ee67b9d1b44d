//! Prometheus metrics of the webhook, served as OpenMetrics text on the admin port.
//!
//! Every family carries the `ps_webhook` prefix. Labels are bounded: the outcome and mode of
//! an admission come from fixed sets in the core, reload results are `success`/`failure`, and
//! there is deliberately no namespace or pod label.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ps_webhook_admissions_total` | counter | `outcome`, `mode` (`none` when no mode applies) |
//! | `ps_webhook_admission_duration_seconds` | histogram | — |
//! | `ps_webhook_config_reloads_total` | counter | `result` |
//! | `ps_webhook_certificate_reloads_total` | counter | `result` |
//! | `ps_webhook_certificate_expiry_timestamp_seconds` | gauge | — |
//! | `ps_webhook_ca_expiry_timestamp_seconds` | gauge | — (self-managed certificates; 0 otherwise) |
//! | `ps_webhook_certificate_rotations_total` | counter | `result` (self-managed: rotations this replica led to the switch, and failed steps) |

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Upper bounds of the admission latency histogram, in seconds: sub-millisecond resolution
/// where a healthy webhook lives, and a tail up to a second.
pub const DURATION_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
];

/// The `mode` label value of admissions that did not choose an injection mode.
pub const NO_MODE: &str = "none";

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    outcome: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

impl ResultLabels {
    fn of(ok: bool) -> Self {
        Self {
            result: if ok { "success" } else { "failure" },
        }
    }
}

/// All metric families of one webhook process (or one test server).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    admissions: Family<AdmissionLabels, Counter>,
    duration: Histogram,
    config_reloads: Family<ResultLabels, Counter>,
    certificate_reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
    ca_expiry: Gauge,
    certificate_rotations: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ps_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission requests answered, by outcome and injection mode",
            admissions.clone(),
        );
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "admission_duration_seconds",
            "Time from request headers to response, per admission request",
            duration.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Reloads of the cluster configuration file, by result",
            config_reloads.clone(),
        );
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Reloads of the serving certificate and key, by result",
            certificate_reloads.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as Unix time",
            certificate_expiry.clone(),
        );
        let ca_expiry = Gauge::default();
        registry.register(
            "ca_expiry_timestamp_seconds",
            "notAfter of the self-managed CA that signed the serving certificate, as Unix time (0: not self-managed)",
            ca_expiry.clone(),
        );
        let certificate_rotations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_rotations",
            "Self-managed certificate rotations this replica led to the switch (success), and rotation steps that failed (failure)",
            certificate_rotations.clone(),
        );
        // Both results exist from the start, so an alert on `failure` has a series to watch.
        for ok in [true, false] {
            let _ = config_reloads.get_or_create(&ResultLabels::of(ok));
            let _ = certificate_reloads.get_or_create(&ResultLabels::of(ok));
            let _ = certificate_rotations.get_or_create(&ResultLabels::of(ok));
        }
        Self {
            registry,
            admissions,
            duration,
            config_reloads,
            certificate_reloads,
            certificate_expiry,
            ca_expiry,
            certificate_rotations,
        }
    }

    /// Records the `notAfter` of the self-managed CA in use (0 when unknown).
    pub fn set_ca_expiry(&self, not_after: Option<i64>) {
        self.ca_expiry.set(not_after.unwrap_or(0));
    }

    /// Counts a rotation led to the switch (`true`) or a failed rotation step (`false`).
    pub fn certificate_rotation(&self, ok: bool) {
        self.certificate_rotations
            .get_or_create(&ResultLabels::of(ok))
            .inc();
    }

    /// Current value of `certificate_rotations_total{result}`.
    pub fn certificate_rotations(&self, ok: bool) -> u64 {
        self.certificate_rotations
            .get_or_create(&ResultLabels::of(ok))
            .get()
    }

    /// Records the `notAfter` of the serving certificate now in use (0 when unknown).
    pub fn set_certificate_expiry(&self, not_after: Option<i64>) {
        self.certificate_expiry.set(not_after.unwrap_or(0));
    }

    /// Counts one answered admission request and records its latency.
    pub fn observe_admission(&self, outcome: &'static str, mode: Option<&'static str>, elapsed: Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                outcome,
                mode: mode.unwrap_or(NO_MODE),
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&ResultLabels::of(ok)).inc();
    }

    pub fn certificate_reload(&self, ok: bool) {
        self.certificate_reloads
            .get_or_create(&ResultLabels::of(ok))
            .inc();
    }

    /// Current value of `config_reloads_total{result}`.
    pub fn config_reloads(&self, ok: bool) -> u64 {
        self.config_reloads.get_or_create(&ResultLabels::of(ok)).get()
    }

    /// Current value of `certificate_reloads_total{result}`.
    pub fn certificate_reloads(&self, ok: bool) -> u64 {
        self.certificate_reloads
            .get_or_create(&ResultLabels::of(ok))
            .get()
    }

    /// Current value of `admissions_total{outcome,mode}`.
    pub fn admissions(&self, outcome: &'static str, mode: Option<&'static str>) -> u64 {
        self.admissions
            .get_or_create(&AdmissionLabels {
                outcome,
                mode: mode.unwrap_or(NO_MODE),
            })
            .get()
    }

    /// The whole registry as OpenMetrics text (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_prefixed_and_labelled() {
        let m = Metrics::new();
        m.observe_admission("injected", Some("init"), Duration::from_micros(80));
        m.observe_admission("skipped", None, Duration::from_micros(5));
        m.config_reload(false);
        m.certificate_reload(true);
        m.certificate_rotation(true);
        m.set_ca_expiry(Some(1_900_000_000));
        let text = m.encode();
        for want in [
            r#"ps_webhook_admissions_total{outcome="injected",mode="init"} 1"#,
            r#"ps_webhook_admissions_total{outcome="skipped",mode="none"} 1"#,
            r#"ps_webhook_admission_duration_seconds_bucket{le="0.0001"} 2"#,
            r#"ps_webhook_admission_duration_seconds_count 2"#,
            r#"ps_webhook_config_reloads_total{result="failure"} 1"#,
            r#"ps_webhook_config_reloads_total{result="success"} 0"#,
            r#"ps_webhook_certificate_reloads_total{result="success"} 1"#,
            r#"ps_webhook_certificate_rotations_total{result="success"} 1"#,
            r#"ps_webhook_certificate_rotations_total{result="failure"} 0"#,
            "ps_webhook_ca_expiry_timestamp_seconds 1900000000",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(m.config_reloads(false), 1);
        assert_eq!(m.admissions("injected", Some("init")), 1);
    }
}
