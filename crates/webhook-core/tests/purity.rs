//! The purity rule of webhook-core (src/lib.rs), checked on the dependency graph: no async
//! runtime, HTTP, TLS or network crate in the normal (non-dev) dependencies, so a change that
//! brings one in fails here, whatever code uses it.
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

use std::process::Command;

/// Crates whose presence means the core could do IO, serve, or run async code.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tokio-rustls",
    "async-std",
    "smol",
    "futures-executor",
    "mio",
    "hyper",
    "hyper-util",
    "http",
    "http-body",
    "h2",
    "reqwest",
    "axum",
    "tower",
    "rustls",
    "ring",
    "openssl",
    "native-tls",
    "socket2",
    "kube",
    "kube-client",
    "tracing",
    "tracing-subscriber",
];

/// The package names in the normal dependency tree of `package`, through `cargo tree`.
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(&cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-f",
            "{p}",
        ])
        .args(["-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} tree: {e}"));
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn forbidden_in(names: &[String]) -> Vec<&'static str> {
    FORBIDDEN
        .iter()
        .copied()
        .filter(|f| names.iter().any(|n| n == f))
        .collect()
}

#[test]
fn the_core_has_no_runtime_http_or_tls_dependency() {
    let names = normal_dependencies("webhook-core");
    assert!(
        names.iter().any(|n| n == "serde_json"),
        "cargo tree output not understood: {names:?}"
    );
    let found = forbidden_in(&names);
    assert!(
        found.is_empty(),
        "webhook-core must stay pure (src/lib.rs, The purity rule), but depends on {found:?}: \
         move the code that needs them to ps-webhook"
    );
}

/// The check sees what it looks for: the serving crate's tree has the runtime and TLS crates.
#[test]
fn the_check_finds_them_in_the_serving_crate() {
    let found = forbidden_in(&normal_dependencies("ps-webhook"));
    for expected in ["tokio", "hyper", "rustls", "http"] {
        assert!(
            found.contains(&expected),
            "{expected} not found in ps-webhook's tree: {found:?}"
        );
    }
}
