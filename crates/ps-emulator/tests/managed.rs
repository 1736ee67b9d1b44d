//! Managed accounts: lookup, Requests (201/200/409, renew), Credentials, check-in, rotation.

mod common;

use common::*;
use ps_emulator::ACCOUNT_NOT_FOUND;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn post_request(c: &Client, emu: &ps_emulator::Emulator, body: Value) -> (StatusCode, String) {
    let r = c.post(url(emu, "Requests")).json(&body).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn lookup(c: &Client, emu: &ps_emulator::Emulator, system: &str, account: &str) -> (StatusCode, Value) {
    get_json(
        c,
        emu,
        &format!("ManagedAccounts?systemName={system}&accountName={account}"),
    )
    .await
}

async fn credentials(c: &Client, emu: &ps_emulator::Emulator, id: &str) -> (StatusCode, String) {
    let r = get(c, emu, &format!("Credentials/{id}")).await;
    (r.status(), r.text().await.unwrap())
}

/// Checks a `Credentials/{id}` body (a JSON string) against the expected password, never
/// printing either.
fn assert_password(body: &str, expected: &str, what: &str) {
    assert_value(
        serde_json::from_str::<String>(body).ok().as_deref(),
        expected,
        what,
    );
}

async fn checkin(c: &Client, emu: &ps_emulator::Emulator, id: &str) -> StatusCode {
    c.put(url(emu, &format!("Requests/{id}/checkin")))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Looks up `db-prod/svc_static` (no rotation) and requests it with `ConflictOption: reuse`.
async fn request_static(c: &Client, emu: &ps_emulator::Emulator) -> (StatusCode, String) {
    let (_, acct) = lookup(c, emu, "db-prod", "svc_static").await;
    post_request(c, emu, req(&acct["SystemId"], &acct["AccountId"], Some("reuse"))).await
}

fn req(system_id: &Value, account_id: &Value, conflict: Option<&str>) -> Value {
    let mut b =
        json!({"SystemID": system_id, "AccountID": account_id, "DurationMinutes": 5, "Reason": "Tesr"});
    if let Some(c) = conflict {
        b["ConflictOption"] = json!(c);
    }
    b
}

#[tokio::test]
async fn the_official_client_sequence() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;

    let (status, acct) = lookup(&c, &emu, "db-prod", "svc_app").await;
    assert_eq!(status, StatusCode::OK);
    assert!(acct.is_object(), "both names given: one object");
    assert_eq!(acct["SystemName"], "db-prod");
    assert_eq!(acct["AccountName"], "svc_app");
    for f in [
        "PlatformID",
        "SystemId",
        "AccountId",
        "DomainName",
        "DefaultReleaseDuration",
        "MaximumReleaseDuration",
        "LastChangeDate",
        "IsChanging",
        "PreferredNodeID",
    ] {
        assert!(acct.get(f).is_some(), "field {f}");
    }

    let (status, id) = post_request(
        &c,
        &emu,
        req(&acct["SystemId"], &acct["AccountId"], Some("reuse")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id: u64 = id.parse().expect("a bare integer");
    assert_eq!(state(&emu).await["requests_open"], 1);

    let (status, body) = credentials(&c, &emu, &id.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let pw: String = serde_json::from_str(&body).expect("a JSON string");
    assert_value(Some(&pw), "PSCANARY-account-pw-initial-1", "released password");

    assert_eq!(checkin(&c, &emu, &id.to_string()).await, StatusCode::NO_CONTENT);
    assert_eq!(state(&emu).await["requests_open"], 0);

    // Double check-in and credentials after check-in are refused.
    assert_eq!(checkin(&c, &emu, &id.to_string()).await, StatusCode::FORBIDDEN);
    assert_eq!(
        credentials(&c, &emu, &id.to_string()).await.0,
        StatusCode::FORBIDDEN
    );

    // rotate_on_checkin: the next release returns a new value.
    let (status, id2) = request_static(&c, &emu).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(id2, id.to_string());
    let (_, body) = credentials(&c, &emu, &id2).await;
    let pw2: String = serde_json::from_str(&body).unwrap();
    assert!(
        pw2 != "PSCANARY-account-pw-initial-1" && !pw2.is_empty(),
        "password rotated at check-in"
    );
    assert_eq!(checkin(&c, &emu, &id2).await, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn conflicts_reuse_and_renew() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (_, acct) = lookup(&c, &emu, "DB-PROD", "SVC_STATIC").await;
    let (sys, acc) = (&acct["SystemId"], &acct["AccountId"]);

    let (status, first) = post_request(&c, &emu, req(sys, acc, None)).await;
    assert_eq!(status, StatusCode::CREATED);
    // Another request without ConflictOption: 409.
    let (status, _) = post_request(&c, &emu, req(sys, acc, None)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // reuse: 200 with the same id.
    let (status, reused) = post_request(&c, &emu, req(sys, acc, Some("reuse"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reused, first);
    // A second session of the same user shares the request.
    let c2 = client(&emu);
    sign_in(&c2, &emu, "svc-team-a").await;
    let (status, reused2) = post_request(&c2, &emu, req(sys, acc, Some("REUSE"))).await;
    assert_eq!((status, reused2.as_str()), (StatusCode::OK, first.as_str()));
    // renew: a new request, the old one cancelled.
    let (status, renewed) = post_request(&c, &emu, req(sys, acc, Some("renew"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(renewed, first);
    assert_eq!(credentials(&c, &emu, &first).await.0, StatusCode::FORBIDDEN);
    let (status, body) = credentials(&c, &emu, &renewed).await;
    assert_eq!(status, StatusCode::OK);
    assert_password(&body, "PSCANARY-account-pw-static-1", "renewed release");
    assert_eq!(state(&emu).await["requests_open"], 1);
    // The cancelled request is no longer listed; the renewed one is.
    let (_, listed) = get_json(&c, &emu, "Requests").await;
    let ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["RequestID"].to_string())
        .collect();
    assert_eq!(ids.as_slice(), std::slice::from_ref(&renewed));

    // Another user's open request does not conflict with ours, and is not ours to read.
    let cd = client(&emu);
    sign_in(&cd, &emu, "svc-deployer").await;
    let (status, theirs) = post_request(&cd, &emu, req(sys, acc, None)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(credentials(&c, &emu, &theirs).await.0, StatusCode::FORBIDDEN);
    assert_eq!(checkin(&c, &emu, &theirs).await, StatusCode::FORBIDDEN);

    // No rotation for an account without rotate_on_checkin.
    assert_eq!(checkin(&c, &emu, &renewed).await, StatusCode::NO_CONTENT);
    let (_, again) = post_request(&c, &emu, req(sys, acc, Some("reuse"))).await;
    let (_, body) = credentials(&c, &emu, &again).await;
    assert_password(&body, "PSCANARY-account-pw-static-1", "not rotated");
}

#[tokio::test]
async fn rotate_on_checkin_false_in_the_request_keeps_the_password() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (_, acct) = lookup(&c, &emu, "db-prod", "svc_app").await;
    let mut body = req(&acct["SystemId"], &acct["AccountId"], Some("reuse"));
    body["RotateOnCheckin"] = json!(false);
    let (_, id) = post_request(&c, &emu, body).await;
    assert_eq!(checkin(&c, &emu, &id).await, StatusCode::NO_CONTENT);
    let (_, id) = post_request(
        &c,
        &emu,
        req(&acct["SystemId"], &acct["AccountId"], Some("reuse")),
    )
    .await;
    let (_, pw) = credentials(&c, &emu, &id).await;
    assert_password(&pw, "PSCANARY-account-pw-initial-1", "not rotated");
}

#[tokio::test]
async fn lookup_failures() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    for (system, account) in [("db-prod", "nope"), ("nope", "svc_app"), ("db-b", "svc_b")] {
        let r = get(
            &c,
            &emu,
            &format!("ManagedAccounts?systemName={system}&accountName={account}"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{system}/{account}");
        assert_eq!(
            r.text().await.unwrap(),
            format!("\"{ACCOUNT_NOT_FOUND}\""),
            "exact JSON string"
        );
    }
    // Python's lower-case query keys.
    let (status, v) = get_json(
        &c,
        &emu,
        "managedaccounts?systemname=db-prod&accountname=svc_app&limit=1000&offset=0",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["AccountName"], "svc_app");
    // One name only, or none: an array of the requestable accounts.
    let (_, v) = get_json(&c, &emu, "ManagedAccounts?systemName=db-prod").await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (_, v) = get_json(&c, &emu, "ManagedAccounts").await;
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "db-b is not requestable by team-a"
    );
    // A user with no requestor role anywhere: 403.
    let cn = client(&emu);
    sign_in(&cn, &emu, "svc-nobody").await;
    assert_eq!(
        get(
            &cn,
            &emu,
            "ManagedAccounts?systemName=db-prod&accountName=svc_app"
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn request_failures() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let cb = client(&emu);
    sign_in_b(&cb, &emu).await;
    let (_, b_acct) = lookup(&cb, &emu, "db-b", "svc_b").await;
    let (_, acct) = lookup(&c, &emu, "db-prod", "svc_app").await;

    // Not a requestor of that account.
    let (status, _) = post_request(&c, &emu, req(&b_acct["SystemId"], &b_acct["AccountId"], None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Unknown account.
    let (status, body) = post_request(&c, &emu, req(&json!(999), &json!(999), None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, format!("\"{ACCOUNT_NOT_FOUND}\""));
    // Malformed bodies.
    let bad = [
        json!({"AccountID": 1, "DurationMinutes": 5}),
        json!({"SystemID": 1, "DurationMinutes": 5}),
        json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"]}),
        json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 0}),
        json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 525601}),
        json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 5, "AccessType": "Telnet"}),
        json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 5, "AccessType": "App"}),
        json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 5, "ConflictOption": "steal"}),
        json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 5, "Reason": "x".repeat(1001)}),
        json!([1, 2]),
    ];
    for b in bad {
        let (status, _) = post_request(&c, &emu, b.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    }
    let r = c
        .post(url(&emu, "Requests"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Field names in another case and numbers as strings are accepted (ASP.NET binding).
    let (status, _) = post_request(
        &c,
        &emu,
        json!({"systemId": acct["SystemId"].to_string(), "accountid": acct["AccountId"], "durationminutes": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(state(&emu).await["requests_open"], 1);

    // Unknown request ids.
    assert_eq!(credentials(&c, &emu, "424242").await.0, StatusCode::NOT_FOUND);
    assert_eq!(credentials(&c, &emu, "abc").await.0, StatusCode::NOT_FOUND);
    assert_eq!(checkin(&c, &emu, "424242").await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_requests_lists_the_callers_requests() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (_, acct) = lookup(&c, &emu, "db-prod", "svc_app").await;
    let (_, id) = post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None)).await;
    let (status, list) = get_json(&c, &emu, "Requests").await;
    assert_eq!(status, StatusCode::OK);
    let r = &list[0];
    assert_eq!(r["RequestID"].to_string(), id);
    assert_eq!(r["SystemName"], "db-prod");
    assert_eq!(r["AccountName"], "svc_app");
    assert_eq!(r["Status"], "Active");
    assert_eq!(r["AccessType"], "View");
    assert_eq!(r["Reason"], "Tesr");
    for f in [
        "SystemID",
        "AccountID",
        "DomainName",
        "AliasID",
        "ApplicationID",
        "RequestReleaseDate",
        "ApprovedDate",
        "ExpiresDate",
    ] {
        assert!(r.get(f).is_some(), "field {f}");
    }
    assert_eq!(checkin(&c, &emu, &id).await, StatusCode::NO_CONTENT);
    let (_, active) = get_json(&c, &emu, "Requests?status=active").await;
    assert_eq!(active, json!([]));
    // status=all is "both active and pending requests": a checked-in request is not listed.
    let (_, all) = get_json(&c, &emu, "requests?status=all&queue=req").await;
    assert_eq!(all, json!([]));
    assert_eq!(get_json(&c, &emu, "Requests").await.1, json!([]));
    // Another user sees none of them.
    let cb = client(&emu);
    sign_in_b(&cb, &emu).await;
    assert_eq!(get_json(&cb, &emu, "Requests").await.1, json!([]));
    assert_eq!(
        get(&c, &emu, "Requests?status=bogus").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn checkin_with_a_reason_and_with_no_body() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (_, id) = request_static(&c, &emu).await;
    let r = c
        .put(url(&emu, &format!("requests/{id}/Checkin")))
        .json(&json!({"Reason": "done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, id) = request_static(&c, &emu).await;
    let r = c
        .put(url(&emu, &format!("Requests/{id}/checkin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn expired_requests_are_closed_and_rotate() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (_, acct) = lookup(&c, &emu, "db-prod", "svc_app").await;
    let (status, id) = post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(state(&emu).await["requests_open"], 1);
    let (status, _) = faults(&emu, json!({"expire_requests": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state(&emu).await["requests_open"], 0);
    assert_eq!(credentials(&c, &emu, &id).await.0, StatusCode::FORBIDDEN);
    assert_eq!(checkin(&c, &emu, &id).await, StatusCode::FORBIDDEN);
    // An expired request is no longer listed (status=all is active and pending only).
    let (_, list) = get_json(&c, &emu, "Requests").await;
    assert_eq!(list, json!([]));
    // No conflict any more, and the rotating account has a new password.
    let (status, id2) = post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = credentials(&c, &emu, &id2).await;
    let pw: String = serde_json::from_str(&body).unwrap();
    assert!(
        pw != "PSCANARY-account-pw-initial-1" && !pw.is_empty(),
        "rotated at expiry"
    );
}

#[tokio::test]
async fn pending_approval_mode() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (_, acct) = lookup(&c, &emu, "db-prod", "svc_static").await;
    let (status, f) = faults(&emu, json!({"pending_approval": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f["pending_approval"], true);

    let (status, id) = post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None)).await;
    assert_eq!(status, StatusCode::CREATED);
    let s = state(&emu).await;
    assert_eq!(
        (s["requests_open"].clone(), s["requests_pending"].clone()),
        (json!(0), json!(1))
    );
    let (status, body) = credentials(&c, &emu, &id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not approved yet");
    assert!(body.contains("pending"));
    // A pending request still conflicts, and reuse returns it.
    assert_eq!(
        post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None))
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        post_request(
            &c,
            &emu,
            req(&acct["SystemId"], &acct["AccountId"], Some("reuse"))
        )
        .await,
        (StatusCode::OK, id.clone())
    );
    let (_, pending) = get_json(&c, &emu, "Requests?status=pending").await;
    assert_eq!(pending[0]["Status"], "Pending");
    // status=all is both active and pending requests.
    assert_eq!(get_json(&c, &emu, "Requests?status=all").await.1, pending);
    assert_eq!(get_json(&c, &emu, "Requests?status=active").await.1, json!([]));

    faults(&emu, json!({"approve_requests": true, "pending_approval": false})).await;
    let (status, body) = credentials(&c, &emu, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_password(&body, "PSCANARY-account-pw-static-1", "approved release");
    assert_eq!(state(&emu).await["requests_open"], 1);
    assert_eq!(checkin(&c, &emu, &id).await, StatusCode::NO_CONTENT);

    // A pending request can be checked in (withdrawn) without ever being released.
    faults(&emu, json!({"pending_approval": true})).await;
    let (_, id) = post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None)).await;
    assert_eq!(checkin(&c, &emu, &id).await, StatusCode::NO_CONTENT);
    let s = state(&emu).await;
    assert_eq!(
        (s["requests_open"].clone(), s["requests_pending"].clone()),
        (json!(0), json!(0))
    );
    // reset turns the mode off.
    let (_, f) = faults(&emu, json!({"reset": true})).await;
    assert_eq!(f["pending_approval"], false);
}

#[tokio::test]
async fn many_requests_stay_fast_and_consistent() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (_, acct) = lookup(&c, &emu, "db-prod", "svc_static").await;
    let mut last = 0u64;
    for _ in 0..200 {
        let (status, id) = post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None)).await;
        assert_eq!(status, StatusCode::CREATED);
        let id: u64 = id.parse().unwrap();
        assert!(id > last, "ids increase");
        last = id;
        assert_eq!(checkin(&c, &emu, &id.to_string()).await, StatusCode::NO_CONTENT);
    }
    assert_eq!(state(&emu).await["requests_open"], 0);
    // Checked-in requests are not listed; one more open request is.
    let (_, all) = get_json(&c, &emu, "Requests").await;
    assert_eq!(all, json!([]));
    let (_, id) = post_request(&c, &emu, req(&acct["SystemId"], &acct["AccountId"], None)).await;
    let (_, all) = get_json(&c, &emu, "Requests").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["RequestID"].to_string(), id);
    assert_eq!(checkin(&c, &emu, &id).await, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn checkin_before_read_closes_the_request_under_the_reader() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (status, id) = request_static(&c, &emu).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, f) = faults(&emu, json!({"checkin_before_read": 1})).await;
    assert_eq!(f["checkin_before_read"], 1);
    // Another client of the same user checked the shared request in just before this read.
    let (status, body) = credentials(&c, &emu, &id).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("4034"), "not active: {body}");
    assert_eq!(state(&emu).await["requests_open"], 0);
    assert_eq!(
        checkin(&c, &emu, &id).await,
        StatusCode::FORBIDDEN,
        "already checked in"
    );
    // The fault is used up: the next request is new, and its read works.
    let (status, id2) = request_static(&c, &emu).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(id, id2);
    let (status, body) = credentials(&c, &emu, &id2).await;
    assert_eq!(status, StatusCode::OK);
    assert_password(&body, "PSCANARY-account-pw-static-1", "static account");
    assert_eq!(checkin(&c, &emu, &id2).await, StatusCode::NO_CONTENT);
}
