//! `scripts/canary-check`, the end of `scripts/test`, can fail: canaries planted in logs, in each
//! form a log can hold them, are found and named by file, line and kind, without the value.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use base64::Engine as _;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/canary-check")
}

/// Runs the check on `dir`; python3 must be on PATH (a missing one fails the test).
fn check(dir: &Path) -> Output {
    Command::new(script())
        .arg(dir)
        .output()
        .expect("scripts/canary-check runs (python3 on PATH)")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A log of a few harmless lines with `line` as line 3.
fn log_with(line: &str) -> String {
    format!("starting\nINFO ps_agent: wrote 4 outputs\n{line}\ndone\n")
}

#[test]
fn planted_canaries_fail_the_check_named_by_file_line_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let suffix = "Zx81\"q\\b";
    let value = |kind: &str| format!("PSCANARY-{kind}-{suffix}");
    let json = |v: &str| serde_json::to_string(v).unwrap();
    let b64 = |pad: &str, v: &str| base64::engine::general_purpose::STANDARD.encode(format!("{pad}{v}"));
    let planted: Vec<(&str, String, &str)> = vec![
        (
            "plain.log",
            log_with(&format!("password={}", value("secret-pw"))),
            "secret-pw",
        ),
        (
            "json.log",
            log_with(&format!(
                r#"{{"level":"debug","body":{}}}"#,
                json(&value("apikey"))
            )),
            "apikey",
        ),
        (
            "nested-json.log",
            log_with(&json(&format!(r#"{{"token":{}}}"#, json(&value("oauth-token"))))),
            "oauth-token",
        ),
        (
            "url.log",
            log_with(&format!(
                "POST /token client_secret={}",
                value("client-secret").replace('"', "%22").replace('\\', "%5C")
            )),
            "client-secret",
        ),
        (
            "lower.log",
            log_with(&format!("cookie: {}", value("session").to_lowercase())),
            "session",
        ),
        (
            "b64-0.log",
            log_with(&b64("", &value("account-pw"))),
            "(kind not decoded)",
        ),
        (
            "b64-1.log",
            log_with(&b64("x", &value("account-pw"))),
            "(kind not decoded)",
        ),
        (
            "b64-2.log",
            log_with(&b64("xy", &value("account-pw"))),
            "(kind not decoded)",
        ),
        (
            "b64url.log",
            log_with(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("??>{}", value("runas-pw"))),
            ),
            "(kind not decoded)",
        ),
        (
            "hex.log",
            log_with(
                &value("rotated-pw")
                    .bytes()
                    .map(|b| format!("{b:02X}"))
                    .collect::<String>(),
            ),
            "(kind not decoded)",
        ),
    ];
    std::fs::create_dir(dir.path().join("e2e")).unwrap();
    for (name, text, _) in &planted {
        std::fs::write(dir.path().join("e2e").join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("clean.log"), log_with("nothing to see")).unwrap();

    let out = check(dir.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "the check fails:\n{err}");
    for (name, _, kind) in &planted {
        let at = format!("e2e/{name}:3: canary {kind}");
        assert!(
            err.contains(&at),
            "{name} is named with its line and kind ({at}):\n{err}"
        );
    }
    assert!(!err.contains("clean.log"), "{err}");
    assert!(!err.contains("Zx81"), "the output never holds a value");
    assert!(
        err.contains(&format!("FAIL: {} canary occurrence(s)", planted.len())),
        "{err}"
    );
}

#[test]
fn clean_logs_pass_and_a_capture_that_did_not_happen_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Words near the marker are no canary.
    std::fs::write(
        dir.path().join("cargo-test.log"),
        log_with("test canary_check::planted_canaries ... ok; PS CANARY; SCANARY"),
    )
    .unwrap();
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 files"), "{}", stderr(&out));

    let empty = tempfile::tempdir().unwrap();
    let out = check(empty.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the capture did not happen"),
        "{}",
        stderr(&out)
    );

    let out = check(&empty.path().join("missing"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
