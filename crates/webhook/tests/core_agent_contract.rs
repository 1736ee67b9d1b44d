//! The agent accepts what the webhook renders: every injected golden case's agent container
//! environment is loaded with `ps_agent::config::load`, the agent's own start-up parser.
//!
//! The in-cluster CA bundle path is rendered in one place, `PS_CA_FILE`: the test points it at
//! a bundle outside any pod (as the demo and the end-to-end suite do) and the agent loads,
//! `caOnly` included; without the variable a `caOnly` configuration is refused, so nothing else
//! names a CA file the override could not reach.

/// The golden fixtures of the core (`crates/webhook-core/tests/fixtures`) and their
/// configurations, shared with the core's golden tests.
#[path = "../../webhook-core/tests/admission_common/mod.rs"]
mod admission_common;
mod contract_common;

use std::fs;

use admission_common::{cases, config_for, fixtures};
use contract_common::{AgentContainer, agent_containers, with_credentials};
use ps_webhook::admission::{Outcome, review};

#[test]
fn the_agent_loads_every_rendered_configuration() {
    let mut checked = 0;
    let mut ca_checked = 0;
    let tmp = tempfile::tempdir().unwrap();
    let local_ca = tmp.path().join("ca.pem");
    fs::write(
        &local_ca,
        ps_webhook::tls::generate("contract CA", &["localhost"])
            .unwrap()
            .ca_pem,
    )
    .unwrap();
    for case in cases() {
        let config = config_for(&case);
        let body = fs::read(fixtures().join("admission").join(format!("{case}.json"))).unwrap();
        let result = review(&body, &config);
        if result.outcome != Outcome::Injected {
            continue;
        }
        for AgentContainer { name, env } in agent_containers(&result.body) {
            let mut vars = with_credentials(env);
            if vars.contains_key("PS_CA_FILE") {
                let in_pod = &vars["PS_CA_FILE"];
                assert!(in_pod.starts_with("/etc/ps-injector/ca/"), "{case}: {in_pod}");
                let rendered: &str = &vars["PS_AGENT_CONFIG"];
                assert!(
                    !rendered.contains(in_pod.as_str()) && !rendered.contains("caFile"),
                    "{case}: {name}: the CA path is also in PS_AGENT_CONFIG"
                );
                let ca_only = rendered.contains("\"caOnly\":true");
                if ca_only {
                    let mut without = vars.clone();
                    without.remove("PS_CA_FILE");
                    let e = ps_agent::config::load(&without, &ps_agent::config::Tuning::default())
                        .err()
                        .unwrap_or_else(|| panic!("{case}: caOnly without a CA accepted"));
                    assert!(e.0.contains("passwordSafe.caOnly: needs"), "{case}: {}", e.0);
                }
                // The bundle exists only in the pod: redirect the one place that names it.
                vars.insert("PS_CA_FILE".into(), local_ca.display().to_string());
                ca_checked += usize::from(ca_only);
            }
            let settings = ps_agent::config::load(&vars, &ps_agent::config::Tuning::default())
                .unwrap_or_else(|e| panic!("{case}: the agent refuses {name}'s configuration: {}", e.0));
            assert!(!settings.config.root.is_empty());
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} configurations checked");
    assert!(ca_checked >= 1, "no caOnly configuration checked");
}
