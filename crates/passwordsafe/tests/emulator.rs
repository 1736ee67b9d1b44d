//! The client against `ps-emulator` over real TLS on 127.0.0.1: authentication, Secrets Safe,
//! managed accounts, sessions, re-authentication, retries and concurrency.

mod common;

use std::time::Duration;

use common::*;
use passwordsafe::{
    AccountRef, ApiVersion, Auth, Client, Error, FolderPath, RetryPolicy, SecretKind, SecretPath,
    parse_secret_paths,
};
use serde_json::json;

fn sp(s: &str) -> SecretPath {
    s.parse().expect("valid secret path")
}

#[tokio::test]
async fn api_key_reads_credential_text_and_file_secrets() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.expect("sign-in");
    assert_eq!(session.user().user_name.as_deref(), Some("svc-a"));

    let cred = session
        .secret(&sp("team-a/db/password"))
        .await
        .expect("credential");
    assert_value(&cred.value, "PSCANARY-secret-pw-cr3d-Value!\"q", "credential");
    assert_eq!(
        cred.kind,
        SecretKind::Credential {
            username: "admin".into()
        }
    );
    assert_eq!(cred.title, "password");
    assert_eq!(cred.folder_path, "team-a/db", "backslashes normalized");
    assert!(
        cred.metadata.get("Password").is_none(),
        "metadata without Password"
    );
    assert_eq!(cred.metadata["Description"], "db admin");
    assert!(!cred.id.is_empty());
    assert_no_values(&format!("{cred:?}"));
    assert_no_values(&cred.metadata.to_string());

    let text = session.secret(&sp("team-a/db/config")).await.expect("text");
    assert_eq!(text.kind, SecretKind::Text);
    assert_value(&text.value, "PSCANARY-secret-text-a=1\nb=2\n", "text");

    let file = session.secret(&sp("team-a/db/tls.crt")).await.expect("file");
    assert_eq!(
        file.kind,
        SecretKind::File {
            file_name: "tls.crt".into()
        }
    );
    assert_value(
        &file.value,
        "-----BEGIN CERTIFICATE-----\nPSCANARY-secret-file-FAKE\n-----END CERTIFICATE-----\n",
        "file",
    );
    assert_eq!(
        calls(&emu, "GET secrets-safe/secrets/{id}/file/download").await,
        1
    );

    // Titles and paths match case-insensitively on the server; whitespace is trimmed.
    let top = session
        .secret(&sp(" TEAM-A / Top "))
        .await
        .expect("top-level secret");
    assert_value(&top.value, "PSCANARY-secret-text-top-level", "top");

    session.sign_out().await.expect("sign-out");
    assert_closed(&emu).await;
}

#[tokio::test]
async fn oauth_and_password_and_beyondtrust_key_sign_in() {
    let emu = start().await;
    for auth in [
        oauth(),
        api_key("svc-pwd"),
        Auth::from_beyondtrust_key(&format!(" {KEY} ; RunAs=\"svc-pwd\"; pwd=[{USER_PWD}]"))
            .expect("key string"),
    ] {
        let session = client(&emu, auth).sign_in().await.expect("sign-in");
        let s = session.secret(&sp("team-a/db/password")).await.expect("secret");
        assert_value(&s.value, "PSCANARY-secret-pw-cr3d-Value!\"q", "credential");
        session.sign_out().await.expect("sign-out");
    }
    assert_eq!(calls(&emu, "POST auth/connect/token").await, 1);
    assert_closed(&emu).await;
}

#[tokio::test]
async fn bad_credentials_are_authentication_errors() {
    let emu = start().await;
    let cases = [
        (
            "wrong key",
            Auth::ApiKey {
                key: "key-wrong".into(),
                runas: "svc-a".into(),
                password: None,
            },
        ),
        (
            "wrong runas",
            Auth::ApiKey {
                key: KEY.into(),
                runas: "nobody".into(),
                password: None,
            },
        ),
        (
            "missing pwd",
            Auth::ApiKey {
                key: KEY.into(),
                runas: "svc-pwd".into(),
                password: None,
            },
        ),
        (
            "wrong pwd",
            Auth::ApiKey {
                key: KEY.into(),
                runas: "svc-pwd".into(),
                password: Some("nope".into()),
            },
        ),
        (
            "key not for user",
            Auth::ApiKey {
                key: OTHER_KEY.into(),
                runas: "svc-a".into(),
                password: None,
            },
        ),
        (
            "wrong client secret",
            Auth::OAuth {
                client_id: CLIENT_ID.into(),
                client_secret: "wrong".into(),
            },
        ),
        (
            "unknown client",
            Auth::OAuth {
                client_id: "00000000-0000-0000-0000-000000000000".into(),
                client_secret: "x".into(),
            },
        ),
    ];
    for (name, auth) in cases {
        let err = client(&emu, auth).sign_in().await.expect_err(name);
        assert!(matches!(err, Error::Authentication { .. }), "{name}: {err}");
        assert!(err.to_string().contains("authentication failed"), "{name}: {err}");
        assert_no_values(&err.to_string());
        assert_no_values(&format!("{err:?}"));
    }
    // Not retried: one call each.
    assert_eq!(calls(&emu, "POST auth/signappin").await, 5);
    assert_eq!(calls(&emu, "POST auth/connect/token").await, 2);
    assert_closed(&emu).await;
}

#[tokio::test]
async fn not_found_and_permission_errors_name_what_failed() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();

    let err = session.secret(&sp("team-a/db/missing")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("\"team-a/db/missing\""), "{err}");

    let err = session.secret(&sp("no-such-safe/x")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    let err = session
        .folder(&"team-a/empty".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("folder \"team-a/empty\""), "{err}");

    let err = session.secret(&sp("team-b/db/password")).await.unwrap_err();
    assert!(matches!(err, Error::Permission { status: 403, .. }), "{err}");
    assert!(err.to_string().contains("secret \"team-b/db/password\""), "{err}");
    assert_no_values(&err.to_string());

    let acct: AccountRef = "db-prod/nobody".parse().unwrap();
    let err = session.managed_account(&acct).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("managed account \"db-prod/nobody\""),
        "{err}"
    );

    // Permission errors are final: one call each.
    let before = calls(&emu, "POST requests").await;
    let err = session
        .managed_account(&"db-b/svc_b".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Permission { .. } | Error::NotFound { .. }),
        "{err}"
    );
    assert!(calls(&emu, "POST requests").await - before <= 1);

    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn folder_listing_downloads_files_and_reads_both_shapes() {
    let emu = start().await;
    for version in [
        None,
        Some(ApiVersion::V3_0),
        Some(ApiVersion::V3_1),
        Some(ApiVersion::V3_2),
    ] {
        let mut cfg = config(&emu, api_key("svc-a"));
        cfg.api_version = version;
        let session = Client::new(cfg).unwrap().sign_in().await.unwrap();
        let folder: FolderPath = "team-a/db".parse().unwrap();
        let mut secrets = session.folder(&folder).await.expect("folder");
        secrets.sort_by(|a, b| a.title.cmp(&b.title));
        let titles: Vec<&str> = secrets.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["config", "password", "tls.crt"], "{version:?}");
        assert!(secrets.iter().all(|s| s.folder_path == "team-a/db"));
        assert_value(&secrets[0].value, "PSCANARY-secret-text-a=1\nb=2\n", "config");
        assert_value(&secrets[1].value, "PSCANARY-secret-pw-cr3d-Value!\"q", "password");
        assert_value(
            &secrets[2].value,
            "-----BEGIN CERTIFICATE-----\nPSCANARY-secret-file-FAKE\n-----END CERTIFICATE-----\n",
            "file",
        );

        let nested = session
            .secret(&sp("team-a/db/replica/password"))
            .await
            .expect("nested");
        assert_eq!(nested.folder_path, "team-a/db/replica");
        assert_value(&nested.value, "PSCANARY-secret-pw-replica", "nested");
        session.sign_out().await.unwrap();
    }
    assert_closed(&emu).await;
}

#[tokio::test]
async fn separator_other_than_slash() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let path = SecretPath::parse_with_separator("team-a*a/b*slashed", '*').unwrap();
    let s = session.secret(&path).await.expect("secret in a folder named a/b");
    assert_value(&s.value, "PSCANARY-secret-text-inside a/b", "slashed");
    let folder = FolderPath::parse_with_separator("team-a*a/b", '*').unwrap();
    assert_eq!(session.folder(&folder).await.expect("folder a/b").len(), 1);
    session.sign_out().await.unwrap();
}

#[tokio::test]
async fn managed_account_is_requested_read_and_checked_in() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let acct: AccountRef = "db-prod/svc_app".parse().unwrap();
    let cred = session.managed_account(&acct).await.expect("managed account");
    assert_eq!(
        (cred.system.as_str(), cred.account.as_str()),
        ("db-prod", "svc_app")
    );
    assert_value(
        &cred.password,
        "PSCANARY-account-pw-managed-1",
        "managed password",
    );
    assert_no_values(&format!("{cred:?}"));
    assert_eq!(state(&emu).await["requests_open"], 0, "checked in");
    assert_eq!(calls(&emu, "PUT requests/{id}/checkin").await, 1);

    // A rotating account: checking in rotates it, so the next release differs.
    let rot: AccountRef = "db-prod/svc_rotating".parse().unwrap();
    let first = session.managed_account(&rot).await.unwrap();
    assert_value(&first.password, "PSCANARY-account-pw-rotating-1", "first release");
    let second = session.managed_account(&rot).await.unwrap();
    assert!(
        second.password.expose_bytes() != first.password.expose_bytes(),
        "rotated on check-in"
    );

    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

/// `managed_account_open` leaves the request open for the caller to write the password first;
/// `check_in_open_requests` (or sign-out) closes it; a failed release is closed at once.
#[tokio::test]
async fn managed_account_open_is_checked_in_later() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let acct: AccountRef = "db-prod/svc_app".parse().unwrap();
    let cred = session
        .managed_account_open(&acct)
        .await
        .expect("managed account");
    assert_value(
        &cred.password,
        "PSCANARY-account-pw-managed-1",
        "managed password",
    );
    assert_eq!(state(&emu).await["requests_open"], 1, "left open");
    assert_eq!(calls(&emu, "PUT requests/{id}/checkin").await, 0);
    session.check_in_open_requests().await.unwrap();
    assert_eq!(state(&emu).await["requests_open"], 0, "checked in");
    assert_eq!(calls(&emu, "PUT requests/{id}/checkin").await, 1);
    session.check_in_open_requests().await.unwrap();
    assert_eq!(
        calls(&emu, "PUT requests/{id}/checkin").await,
        1,
        "nothing left to check in"
    );

    let fail = json!({"fail": {"route": "GET credentials/{id}", "status": 403, "count": 1}});
    faults(&emu, fail).await;
    let err = session.managed_account_open(&acct).await.unwrap_err();
    assert!(matches!(err, Error::Permission { .. }), "{err}");
    assert_eq!(
        state(&emu).await["requests_open"],
        0,
        "a failed release is checked in at once"
    );

    session.managed_account_open(&acct).await.unwrap();
    assert_eq!(state(&emu).await["requests_open"], 1);
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn managed_account_is_checked_in_when_credentials_fail() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    // A 403 from Credentials: the request is made once more, to tell a shared request checked in
    // by another client (a new ID) from a real refusal (the same ID, still open): here the
    // same, so the refusal is final and the read is not repeated.
    let fail = |status: u16, count: u32| json!({"fail": {"route": "GET credentials/{id}", "status": status, "count": count}});
    faults(&emu, fail(403, 1)).await;
    let acct: AccountRef = "db-prod/svc_app".parse().unwrap();
    let err = session.managed_account(&acct).await.unwrap_err();
    assert!(matches!(err, Error::Permission { .. }), "{err}");
    assert_eq!(calls(&emu, "GET credentials/{id}").await, 1);
    assert_eq!(calls(&emu, "POST requests").await, 2);
    assert_eq!(
        state(&emu).await["requests_open"],
        0,
        "checked in despite the failure"
    );

    // A server error that outlasts the retry budget: checked in too.
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.retry = RetryPolicy {
        max_elapsed: Duration::from_millis(200),
        ..fast_retry()
    };
    let short = Client::new(cfg).unwrap().sign_in().await.unwrap();
    faults(&emu, fail(500, 100_000)).await;
    let err = short.managed_account(&acct).await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 500, .. }), "{err}");
    assert_eq!(
        state(&emu).await["requests_open"],
        0,
        "checked in after a server error"
    );
    faults(&emu, json!({"reset": true})).await;
    short.sign_out().await.unwrap();

    // A Credentials body that is not a JSON string is an error (never an empty password) and
    // the request is still checked in.
    faults(
        &emu,
        json!({"fail": {"route": "GET credentials/{id}", "status": 200, "count": 1}}),
    )
    .await;
    let err = session.managed_account(&"db-prod/svc_app".parse().unwrap()).await;
    if let Err(err) = &err {
        assert!(matches!(err, Error::InvalidResponse { .. }), "{err}");
    }
    assert_eq!(state(&emu).await["requests_open"], 0);
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn concurrent_releases_of_one_account_do_not_close_each_others_request() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    // One caller's Credentials call is delayed by a retry; if both shared the reused request, the
    // other's check-in would close it first.
    faults(
        &emu,
        json!({"fail": {"route": "GET credentials/{id}", "status": 503, "count": 1}}),
    )
    .await;
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let s = session.clone();
            tokio::spawn(async move { s.managed_account(&"db-prod/svc_app".parse().unwrap()).await })
        })
        .collect();
    for t in tasks {
        assert_value(
            &t.await.unwrap().expect("both releases succeed").password,
            "PSCANARY-account-pw-managed-1",
            "managed",
        );
    }
    assert_eq!(calls(&emu, "PUT requests/{id}/checkin").await, 2);
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn a_request_closed_by_another_client_is_requested_again() {
    let emu = start().await;
    let a = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let b = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    // Same user, same account: `reuse` gives both sessions one request. The first Credentials
    // call is delayed by a retry, so the other session checks the shared request in first.
    faults(
        &emu,
        json!({"fail": {"route": "GET credentials/{id}", "status": 503, "count": 1}}),
    )
    .await;
    let tasks: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| tokio::spawn(async move { s.managed_account(&"db-prod/svc_app".parse().unwrap()).await }))
        .collect();
    for t in tasks {
        let cred = t.await.unwrap().expect("both sessions get the password");
        assert_value(&cred.password, "PSCANARY-account-pw-managed-1", "managed");
    }
    a.sign_out().await.unwrap();
    b.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn failed_checkin_is_retried_at_sign_out() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    faults(
        &emu,
        json!({"fail": {"route": "PUT requests/{id}/checkin", "status": 400, "count": 1}}),
    )
    .await;
    let cred = session
        .managed_account(&"db-prod/svc_app".parse().unwrap())
        .await
        .expect("password kept");
    assert_value(
        &cred.password,
        "PSCANARY-account-pw-managed-1",
        "managed password",
    );
    assert_eq!(state(&emu).await["requests_open"], 1, "check-in failed");
    session.sign_out().await.expect("sign-out checks in");
    assert_closed(&emu).await;
}

#[tokio::test]
async fn expired_session_reauthenticates_once_for_concurrent_calls() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    session.secret(&sp("team-a/db/password")).await.unwrap();
    faults(&emu, json!({"expire_sessions": true})).await;

    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = session.clone();
        tasks.push(tokio::spawn(async move {
            s.secret(&sp(&format!("team-a/many/s{i:02}"))).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let secret = t.await.unwrap().expect("read after re-authentication");
        assert_value(&secret.value, &format!("PSCANARY-secret-text-v{i:02}"), "many");
    }
    assert_eq!(
        calls(&emu, "POST auth/signappin").await,
        2,
        "one sign-in plus one re-authentication"
    );

    // A session that stays refused after re-authentication is an authentication error, not a loop.
    faults(
        &emu,
        json!({"fail": {"route": "GET secrets-safe/secrets", "status": 401, "count": 2}}),
    )
    .await;
    let err = session.secret(&sp("team-a/db/password")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Authentication {
                status: Some(401),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("after re-authentication"), "{err}");
    assert_eq!(calls(&emu, "POST auth/signappin").await, 3);

    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn failed_reauthentication_is_tried_again_by_later_calls() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    faults(
        &emu,
        json!({"expire_sessions": true, "fail": {"route": "POST auth/signappin", "status": 401, "count": 1}}),
    )
    .await;
    // Three calls see the session expired; one signs in again, refused; all three fail, each
    // naming itself and how the new sign-in was refused.
    let paths = ["team-a/db/password", "team-a/db/config", "team-a/top"];
    let tasks: Vec<_> = paths
        .iter()
        .map(|p| {
            let (s, p) = (session.clone(), sp(p));
            tokio::spawn(async move { s.secret(&p).await })
        })
        .collect();
    for (t, p) in tasks.into_iter().zip(paths) {
        let err = t.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Authentication { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "secret \"{p}\": authentication failed (POST auth/signappin: HTTP 401)"
            )) && text.contains("the session expired and signing in again was refused"),
            "{text}"
        );
    }
    // The outage is over: the next call (say, the next refresh) signs in again and succeeds.
    let s = session
        .secret(&sp("team-a/db/password"))
        .await
        .expect("recovered");
    assert_value(&s.value, "PSCANARY-secret-pw-cr3d-Value!\"q", "credential");
    assert_eq!(calls(&emu, "POST auth/signappin").await, 3);
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn retryable_failures_are_retried_within_budget() {
    let emu = start().await;
    let session = client(&emu, oauth()).sign_in().await.unwrap();
    let route = "GET secrets-safe/secrets";

    faults(&emu, json!({"fail": {"route": route, "status": 503, "count": 2}})).await;
    session
        .secret(&sp("team-a/db/password"))
        .await
        .expect("succeeds after two 503");
    assert_eq!(calls(&emu, route).await, 3);

    faults(&emu, json!({"fail": [{"route": route, "status": 429, "count": 1}, {"route": "GET secrets-safe/secrets/{id}/file/download", "status": 500, "count": 1}]})).await;
    session
        .secret(&sp("team-a/db/tls.crt"))
        .await
        .expect("succeeds after 429 and 500");
    assert_eq!(calls(&emu, route).await, 5);

    faults(&emu, json!({"fail": {"route": route, "status": 408, "count": 1}})).await;
    session
        .secret(&sp("team-a/db/password"))
        .await
        .expect("succeeds after 408");
    assert_eq!(calls(&emu, route).await, 7);

    faults(&emu, json!({"drop": {"route": route, "count": 2}})).await;
    session
        .secret(&sp("team-a/db/password"))
        .await
        .expect("succeeds after dropped connections");

    // Sign-in itself is retried too.
    faults(
        &emu,
        json!({"fail": {"route": "POST auth/signappin", "status": 502, "count": 1}}),
    )
    .await;
    client(&emu, oauth())
        .sign_in()
        .await
        .expect("sign-in after 502")
        .sign_out()
        .await
        .unwrap();

    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn final_statuses_are_not_retried() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let route = "GET secrets-safe/secrets";
    for (status, check) in [
        (
            403u16,
            (|e: &Error| matches!(e, Error::Permission { .. })) as fn(&Error) -> bool,
        ),
        (404, |e| matches!(e, Error::NotFound { .. })),
        (400, |e| matches!(e, Error::Rejected { status: 400, .. })),
        (409, |e| matches!(e, Error::Conflict { attempts: 1, .. })),
    ] {
        let before = calls(&emu, route).await;
        faults(
            &emu,
            json!({"fail": {"route": route, "status": status, "count": 1}}),
        )
        .await;
        let err = session.secret(&sp("team-a/db/password")).await.unwrap_err();
        assert!(check(&err), "{status}: {err}");
        assert_eq!(
            calls(&emu, route).await - before,
            1,
            "{status} must not be retried"
        );
        assert_no_values(&err.to_string());
    }
    session.sign_out().await.unwrap();
}

#[tokio::test]
async fn exhausted_budget_reports_the_last_failure() {
    let emu = start().await;
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.retry = RetryPolicy {
        max_elapsed: Duration::from_millis(300),
        ..fast_retry()
    };
    let session = Client::new(cfg).unwrap().sign_in().await.unwrap();
    let route = "GET secrets-safe/secrets";
    faults(
        &emu,
        json!({"fail": {"route": route, "status": 503, "count": 100000}}),
    )
    .await;
    let err = session.secret(&sp("team-a/db/password")).await.unwrap_err();
    let Error::Server {
        status: 503,
        attempts,
        ..
    } = &err
    else {
        panic!("unexpected error: {err}")
    };
    assert!(*attempts > 1, "retried before giving up");
    assert_eq!(calls(&emu, route).await, u64::from(*attempts));
    assert!(err.to_string().contains("secret \"team-a/db/password\""), "{err}");
    assert!(err.is_transient());
    faults(&emu, json!({"reset": true})).await;
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn conflicts_on_requests_are_retried() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    faults(
        &emu,
        json!({"fail": {"route": "POST requests", "status": 409, "count": 2}}),
    )
    .await;
    let cred = session
        .managed_account(&"db-prod/svc_app".parse().unwrap())
        .await
        .expect("after two 409");
    assert_value(&cred.password, "PSCANARY-account-pw-managed-1", "managed");
    assert_eq!(calls(&emu, "POST requests").await, 3);
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn many_secrets_concurrently_over_one_session() {
    let emu = start().await;
    faults(&emu, json!({"latency_ms": 20})).await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let list: Vec<String> = (0..20).map(|i| format!("team-a/many/s{i:02}")).collect();
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    let paths = parse_secret_paths(&refs, '/').expect("valid");
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|p| {
            let s = session.clone();
            tokio::spawn(async move { s.secret(&p).await })
        })
        .collect();
    let mut acct_tasks = Vec::new();
    for _ in 0..3 {
        let s = session.clone();
        acct_tasks.push(tokio::spawn(async move {
            s.managed_account(&"db-prod/svc_app".parse().unwrap()).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_value(
            &t.await.unwrap().expect("secret").value,
            &format!("PSCANARY-secret-text-v{i:02}"),
            "many",
        );
    }
    for t in acct_tasks {
        assert_value(
            &t.await.unwrap().expect("account").password,
            "PSCANARY-account-pw-managed-1",
            "managed",
        );
    }
    let st = state(&emu).await;
    assert_eq!(st["sessions_open"], 1, "one session for everything");
    assert_eq!(st["calls"]["POST auth/signappin"], 1);
    assert_eq!(st["calls"]["GET secrets-safe/secrets"], 20);
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn sign_out_is_idempotent_and_final() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let other = session.clone();
    session.sign_out().await.unwrap();
    let err = other.secret(&sp("team-a/db/password")).await.unwrap_err();
    assert!(matches!(err, Error::SignedOut { .. }), "{err}");
    other.sign_out().await.expect("second sign-out is a no-op");
    assert_eq!(calls(&emu, "POST auth/signout").await, 1);

    // Sign-out after the server dropped the session is not an error.
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    faults(&emu, json!({"expire_sessions": true})).await;
    session.sign_out().await.expect("sign-out of an expired session");
    assert_closed(&emu).await;
}

#[tokio::test]
async fn dropped_session_is_signed_out_in_the_background() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    session.secret(&sp("team-a/db/password")).await.unwrap();
    drop(session);
    for _ in 0..200 {
        if state(&emu).await["sessions_open"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the dropped session was not signed out");
}

/// The replicas of a Deployment at rollout: many pods (each its own client and session), one
/// run-as user, one managed account, all at once. `ConflictOption: reuse` hands them one shared
/// request; whatever order the check-ins land in, every pod must get the password and no request
/// may stay open.
async fn release_one_account_from_many_pods(pods: usize) {
    let emu = start().await;
    let tasks: Vec<_> = (0..pods)
        .map(|_| {
            let client = Client::new(config(&emu, api_key("svc-a"))).expect("client");
            tokio::spawn(async move {
                let session = client.sign_in().await?;
                let cred = session.managed_account(&"db-prod/svc_app".parse().unwrap()).await;
                session.sign_out().await?;
                cred
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(cred) => assert_value(
                &cred.password,
                "PSCANARY-account-pw-managed-1",
                "managed password",
            ),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert_no_values(&failures.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {pods} pods failed: {failures:#?}",
        failures.len()
    );
    assert_closed(&emu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pods_of_one_user_release_one_account_at_once() {
    release_one_account_from_many_pods(50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_of_one_user_release_one_account_at_once() {
    release_one_account_from_many_pods(200).await;
}

#[tokio::test]
async fn a_request_checked_in_before_the_read_is_requested_again() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    // Three reads in a row find their request checked in by "another pod" just before them.
    faults(&emu, json!({"checkin_before_read": 3})).await;
    let cred = session
        .managed_account(&"db-prod/svc_app".parse().unwrap())
        .await
        .expect("the fourth request is read");
    assert_value(&cred.password, "PSCANARY-account-pw-managed-1", "managed");
    assert_eq!(calls(&emu, "POST requests").await, 4);
    assert_eq!(calls(&emu, "GET credentials/{id}").await, 4);
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn a_budget_too_small_for_the_race_says_so() {
    let emu = start().await;
    let session = client_with_budget(&emu, api_key("svc-a"), Duration::from_secs(1))
        .sign_in()
        .await
        .unwrap();
    faults(&emu, json!({"checkin_before_read": 100_000})).await;
    let err = session
        .managed_account(&"db-prod/svc_app".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SharedRequestClosed { .. }), "{err}");
    assert!(err.is_transient(), "the next refresh may succeed");
    assert!(
        err.to_string()
            .contains("checked in by one of them before it could be read"),
        "{err}"
    );
    faults(&emu, json!({"reset": true})).await;
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn a_pending_request_is_refused_at_once_and_withdrawn() {
    let emu = start().await;
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    faults(&emu, json!({"pending_approval": true})).await;
    let started = std::time::Instant::now();
    let err = session
        .managed_account(&"db-prod/svc_app".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Permission { .. }), "{err}");
    // The second request returned the same, still open, request: a real refusal, not a race.
    assert_eq!(calls(&emu, "POST requests").await, 2);
    assert_eq!(calls(&emu, "GET credentials/{id}").await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused without using up the budget"
    );
    let st = state(&emu).await;
    assert_eq!(st["requests_pending"], 0, "withdrawn by its check-in");
    session.sign_out().await.unwrap();
    assert_closed(&emu).await;
}

#[tokio::test]
async fn a_reused_request_is_left_to_its_creator() {
    let emu = start().await;
    let creator = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let reuser = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    // The creator's check-in fails once, so its request stays open (and it retries at sign-out).
    faults(
        &emu,
        json!({"fail": {"route": "PUT requests/{id}/checkin", "status": 400, "count": 1}}),
    )
    .await;
    let acct: AccountRef = "db-prod/svc_app".parse().unwrap();
    creator.managed_account(&acct).await.expect("creator");
    assert_eq!(state(&emu).await["requests_open"], 1);
    // Another pod of the same user reuses it (200) and must not close it under its creator.
    let cred = reuser.managed_account(&acct).await.expect("reuser");
    assert_value(&cred.password, "PSCANARY-account-pw-managed-1", "managed");
    assert_eq!(
        state(&emu).await["requests_open"],
        1,
        "still open: not the reuser's to close"
    );
    assert_eq!(
        calls(&emu, "PUT requests/{id}/checkin").await,
        1,
        "only the creator's failed one"
    );
    reuser.sign_out().await.unwrap();
    assert_eq!(state(&emu).await["requests_open"], 1);
    creator
        .sign_out()
        .await
        .expect("the creator checks it in at sign-out");
    assert_closed(&emu).await;
}

#[tokio::test]
async fn throttling_waits_for_retry_after_and_is_named_when_the_budget_is_too_small() {
    let emu = start_rate_limited(1, 1, 1).await;
    // Sign-in takes the only token; the lookup is refused (429, Retry-After 1) and retried
    // after at least that long, when the bucket has a token again.
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    let started = std::time::Instant::now();
    let s = session
        .secret(&sp("team-a/db/password"))
        .await
        .expect("after the wait");
    assert_value(&s.value, "PSCANARY-secret-pw-cr3d-Value!\"q", "credential");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let load = state(&emu).await["load"].clone();
    assert!(load["throttled"].as_u64().unwrap() >= 1, "{load}");
    assert_eq!(load["early_retries"], 0, "Retry-After honoured");

    // A budget smaller than Retry-After: the call fails at once, naming the throttling; sign-out
    // has its own budget and still closes the session.
    let short = client_with_budget(&emu, api_key("svc-a"), Duration::from_millis(500));
    let short = loop {
        // Sign-in itself may meet the limit and run out of its small budget.
        match short.sign_in().await {
            Ok(s) => break s,
            Err(e) => assert!(matches!(e, Error::Throttled { .. }), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    };
    let err = short.secret(&sp("team-a/db/password")).await.unwrap_err();
    assert!(matches!(err, Error::Throttled { status: 429, .. }), "{err}");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("throttled by Password Safe")
            && err.to_string().contains("Retry-After 1 s")
            && err.to_string().contains("the retry budget ran out"),
        "{err}"
    );
    short.sign_out().await.expect("sign-out waits for the rate limit");
    session.sign_out().await.expect("sign-out");
    assert_eq!(state(&emu).await["load"]["early_retries"], 0);
    assert_closed(&emu).await;
}

#[tokio::test]
async fn a_throttled_sign_out_waits_as_long_as_the_work_would() {
    // Found by the 500-agent storm: sign-outs kept meeting 429 until their own 10 s budget ran
    // out, leaving sessions open. While Password Safe throttles (it is up, and asks for
    // patience), closing calls get the configured budget when it is larger.
    let emu = start_rate_limited(1, 1, 11).await;
    let session = client_with_budget(&emu, api_key("svc-a"), Duration::from_secs(30))
        .sign_in()
        .await
        .expect("takes the only token");
    let started = std::time::Instant::now();
    session
        .sign_out()
        .await
        .expect("waits out Retry-After 11 s, past the 10 s closing budget");
    assert!(
        started.elapsed() >= Duration::from_secs(11),
        "{:?}",
        started.elapsed()
    );
    let st = state(&emu).await;
    assert_eq!(st["load"]["early_retries"], 0);
    assert!(st["load"]["throttled"].as_u64().unwrap() >= 1);
    assert_closed(&emu).await;
}

#[tokio::test]
async fn a_session_told_to_wait_sends_nothing_before_retry_after() {
    // Found by the storm (small budget): a check-in refused with 429 and given up was sent again
    // at once by the sign-out; Password Safe had asked the session to wait. No call of a session
    // goes out before the latest Retry-After it was given.
    let emu = start_rate_limited(1, 4, 2).await;
    let session = client_with_budget(&emu, api_key("svc-a"), Duration::from_millis(500))
        .sign_in()
        .await
        .unwrap();
    // Sign-in, lookup, request and read take the four tokens; the check-in gets 429,
    // Retry-After 2 s, beyond the 500 ms budget: the password is kept, the check-in left for
    // sign-out.
    let cred = session
        .managed_account(&"db-prod/svc_app".parse().unwrap())
        .await
        .expect("password kept");
    assert_value(&cred.password, "PSCANARY-account-pw-managed-1", "managed");
    let st = state(&emu).await;
    assert_eq!(st["requests_open"], 1, "the check-in was refused");
    assert_eq!(st["load"]["throttled"], 1);
    let started = std::time::Instant::now();
    session.sign_out().await.expect("checks in, then signs out");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let st = state(&emu).await;
    assert_eq!(
        st["load"]["early_retries"], 0,
        "the check-in waited for Retry-After"
    );
    assert_closed(&emu).await;
}
