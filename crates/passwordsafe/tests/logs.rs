//! Every log line the client (and reqwest, hyper, rustls below it) emits at TRACE level during
//! full runs, failures included, is free of secret values, keys, tokens and cookies.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::*;
use passwordsafe::Auth;
use serde_json::json;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_never_hold_values_or_credentials() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace,ps_emulator=off")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global, with the `log` bridge: rustls and reqwest log through `log`.
    subscriber
        .try_init()
        .expect("the only subscriber of this test binary");

    let emu = start().await;
    for auth in [api_key("svc-pwd"), oauth()] {
        let session = client(&emu, auth).sign_in().await.unwrap();
        for p in [
            "team-a/db/password",
            "team-a/db/config",
            "team-a/db/tls.crt",
            "team-a/top",
        ] {
            session.secret(&p.parse().unwrap()).await.unwrap();
        }
        session.folder(&"team-a/db".parse().unwrap()).await.unwrap();
        session
            .managed_account(&"db-prod/svc_app".parse().unwrap())
            .await
            .unwrap();
        faults(&emu, json!({"expire_sessions": true})).await;
        session
            .secret(&"team-a/db/replica/password".parse().unwrap())
            .await
            .unwrap();
        faults(
            &emu,
            json!({"fail": {"route": "GET credentials/{id}", "status": 500, "count": 1}}),
        )
        .await;
        session
            .managed_account(&"db-prod/svc_app".parse().unwrap())
            .await
            .unwrap();
        let _ = session
            .secret(&"team-b/db/password".parse().unwrap())
            .await
            .unwrap_err();
        session.sign_out().await.unwrap();
    }
    let bad = Auth::ApiKey {
        key: OTHER_KEY.into(),
        runas: "svc-pwd".into(),
        password: Some(USER_PWD.into()),
    };
    let _ = client(&emu, bad).sign_in().await.unwrap_err();

    let text = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(text.contains("Password Safe call"), "debug events were captured");
    assert!(text.contains("rustls::"), "library logs were captured");
    assert_no_values(&text);
    // cookie_store logs cookie names at debug ("inserting secure cookie 'ASP.NET_SessionId'"),
    // never a value; a value would show as `name=value`.
    for needle in [
        "SessionId=",
        "access_token",
        "Bearer ",
        "PS-Auth",
        "Set-Cookie",
        "set-cookie",
    ] {
        assert!(!text.contains(needle), "log output contains {needle:?}");
    }
}
