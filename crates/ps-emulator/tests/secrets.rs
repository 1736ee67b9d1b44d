//! Secrets Safe: lookups by path and title, shapes per version, types, files, folders, safes,
//! permissions.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

async fn signed_in(runas: &str) -> (ps_emulator::Emulator, reqwest::Client) {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, runas).await;
    (emu, c)
}

#[tokio::test]
async fn credential_by_path_and_title_has_the_real_fields() {
    let (emu, c) = signed_in("svc-team-a").await;
    let (status, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?decrypt=true&path=team-a%2Fdb&separator=%2F&title=password&version=3.1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list = v.as_array().expect("3.1 answers a bare array");
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_value(
        s["Password"].as_str(),
        "PSCANARY-secret-pw-s3cret",
        "credential password",
    );
    assert_eq!(s["Title"], "password");
    assert_eq!(s["Username"], "admin");
    assert_eq!(s["SecretType"], "Credential");
    assert_eq!(s["Description"], "db admin");
    assert_eq!(s["Folder"], "db");
    assert_eq!(s["FolderPath"], "team-a\\db");
    let id = s["Id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);
    assert_eq!(s["FolderId"].as_str().unwrap().len(), 36);
    for date in ["CreatedOn", "ModifiedOn"] {
        let d = s[date].as_str().unwrap();
        assert!(d.ends_with('Z') && d.len() == 28, "{date}: {d}");
    }
    for field in [
        "FileName",
        "FileHash",
        "Text",
        "Notes",
        "OwnerId",
        "Owner",
        "OwnerType",
        "Owners",
        "Group",
        "Urls",
        "CreatedBy",
        "ModifiedBy",
    ] {
        assert!(s.get(field).is_some(), "missing field {field}");
    }
}

#[tokio::test]
async fn text_secret_value_is_in_password() {
    let (emu, c) = signed_in("svc-team-a").await;
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=config").await;
    assert_eq!(v[0]["SecretType"], "Text");
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-text-a=1",
        "text secret",
    );
    // A secret directly under the safe, title with a space.
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a&title=deploy+token").await;
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-text-tok-0001",
        "text secret under the safe",
    );
    assert_eq!(v[0]["FolderPath"], "team-a");
}

#[tokio::test]
async fn file_secret_and_its_download() {
    let (emu, c) = signed_in("svc-team-a").await;
    let (_, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a/db&title=tls.crt&version=3.1",
    )
    .await;
    let s = &v[0];
    assert_eq!(s["SecretType"], "File");
    assert_eq!(s["FileName"], "tls.crt");
    assert_eq!(s["Password"], Value::Null, "a file's content is not in Password");
    assert_eq!(s["FileHash"].as_str().unwrap().len(), 64);
    let id = s["Id"].as_str().unwrap();
    let r = get(
        &c,
        &emu,
        &format!("secrets-safe/secrets/{id}/file/download?version=3.1"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("tls.crt")
    );
    let body = r.text().await.unwrap();
    assert_value(
        Some(&body),
        "-----BEGIN CERTIFICATE-----\nPSCANARY-secret-file-MIIB\n-----END CERTIFICATE-----\n",
        "file content",
    );
    // The id is matched without regard to case; the path too.
    let r = get(
        &c,
        &emu,
        &format!("Secrets-Safe/Secrets/{}/File/Download", id.to_uppercase()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Downloading a credential secret is refused; an unknown id is 404.
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=password").await;
    let cred = v[0]["Id"].as_str().unwrap();
    let r = get(&c, &emu, &format!("secrets-safe/secrets/{cred}/file/download")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = get(
        &c,
        &emu,
        "secrets-safe/secrets/00000000-0000-0000-0000-000000000000/file/download",
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn version_shapes() {
    let (emu, c) = signed_in("svc-team-a").await;
    for v in ["", "&version=3.0", "&version=3.1"] {
        let (status, body) = get_json(
            &c,
            &emu,
            &format!("secrets-safe/secrets?path=team-a/db&title=password{v}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_array().map(Vec::len), Some(1), "version {v:?}");
    }
    let (_, body) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a/db&title=password&version=3.2",
    )
    .await;
    assert_eq!(body["TotalCount"], 1);
    assert_eq!(body["Data"].as_array().map(Vec::len), Some(1));
    assert_value(
        body["Data"][0]["Password"].as_str(),
        "PSCANARY-secret-pw-s3cret",
        "3.2 password",
    );
    // Not found in both shapes.
    let (status, body) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a/db&title=nope&version=3.2",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"TotalCount": 0, "Data": []}));
    let (status, _) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a/db&title=password&version=9.9",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_secret_is_200_empty_array() {
    let (emu, c) = signed_in("svc-team-a").await;
    for q in [
        "path=team-a/db&title=nope",
        "path=team-a/nope&title=password",
        "path=no-such-safe/db&title=password",
        "path=team-a/db/replica/deeper&title=password",
    ] {
        let r = get(&c, &emu, &format!("secrets-safe/secrets?{q}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{q}");
        assert_eq!(r.text().await.unwrap(), "[]", "{q}");
    }
}

#[tokio::test]
async fn matching_is_case_insensitive_and_separator_aware() {
    let (emu, c) = signed_in("svc-team-a").await;
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=TEAM-A/Db&title=PassWord").await;
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-pw-s3cret",
        "case-insensitive lookup",
    );
    assert_eq!(v[0]["Title"], "password", "the stored title comes back");
    let (_, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a*db*replica&separator=*&title=password",
    )
    .await;
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-pw-r3plica",
        "nested folder, '*' separator",
    );
    // A folder whose name contains '/', reachable with another separator.
    let (_, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a-a%2Fb&separator=-&title=slashed",
    )
    .await;
    assert_eq!(v.as_array().map(Vec::len), Some(0), "'-' also splits team-a");
    let (_, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a*a%2Fb&separator=*&title=slashed",
    )
    .await;
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-text-inside a/b",
        "folder name with a slash",
    );
    // Trailing separator is tolerated.
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db/&title=config").await;
    assert_eq!(v.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn no_title_lists_every_secret_of_the_folder_only() {
    let (emu, c) = signed_in("svc-team-a").await;
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db").await;
    let titles: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["password", "config", "tls.crt"],
        "not the replica subfolder"
    );
    let (_, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a/db&limit=1&offset=1&version=3.2",
    )
    .await;
    assert_eq!(v["TotalCount"], 3);
    assert_eq!(v["Data"][0]["Title"], "config");
    // Neither path nor title: every readable secret (team-a only for this user).
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets").await;
    assert_eq!(v.as_array().unwrap().len(), 6);
    // Title without path: across readable safes.
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?title=password").await;
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["FolderPath"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["team-a\\db", "team-a\\db\\replica"]);
}

#[tokio::test]
async fn decrypt_false_omits_password() {
    let (emu, c) = signed_in("svc-team-a").await;
    let (_, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a/db&title=password&decrypt=false",
    )
    .await;
    assert!(v[0].get("Password").is_none());
    assert_eq!(v[0]["Username"], "admin");
    let (_, v) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets?path=team-a/db&title=password&Decrypt=False",
    )
    .await;
    assert!(
        v[0].get("Password").is_none(),
        "query key and value in another case"
    );
}

#[tokio::test]
async fn no_read_permission_is_403() {
    let (emu, c) = signed_in("svc-team-a").await;
    let r = get(&c, &emu, "secrets-safe/secrets?path=team-b/db&title=password").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = get(&c, &emu, "secrets-safe/secrets?path=team-b/db").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // team-b's secret by id.
    let cb = client(&emu);
    sign_in_b(&cb, &emu).await;
    let (_, v) = get_json(&cb, &emu, "secrets-safe/secrets?path=team-b/db&title=password").await;
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-pw-b-secret",
        "team-b reads its own safe",
    );
    let id = v[0]["Id"].as_str().unwrap();
    assert_eq!(
        get(&c, &emu, &format!("secrets-safe/secrets/{id}"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // A user in no reader group sees nothing when listing.
    let cn = client(&emu);
    sign_in(&cn, &emu, "svc-nobody").await;
    let (_, v) = get_json(&cn, &emu, "secrets-safe/secrets").await;
    assert_eq!(v, serde_json::json!([]));
    let (_, v) = get_json(&cn, &emu, "secrets-safe/safes").await;
    assert_eq!(v, serde_json::json!([]));
}

#[tokio::test]
async fn secret_by_id() {
    let (emu, c) = signed_in("svc-team-a").await;
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=password").await;
    let id = v[0]["Id"].as_str().unwrap();
    let (status, s) = get_json(&c, &emu, &format!("secrets-safe/secrets/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["Id"], id);
    assert_value(
        s["Password"].as_str(),
        "PSCANARY-secret-pw-s3cret",
        "secret by id",
    );
    let (_, s) = get_json(&c, &emu, &format!("secrets-safe/secrets/{id}?decrypt=false")).await;
    assert!(s.get("Password").is_none());
    let (status, _) = get_json(
        &c,
        &emu,
        "secrets-safe/secrets/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ids_are_stable_across_restarts() {
    let (emu1, c1) = signed_in("svc-team-a").await;
    let (emu2, c2) = signed_in("svc-team-a").await;
    let (_, a) = get_json(&c1, &emu1, "secrets-safe/secrets?path=team-a/db&title=password").await;
    let (_, b) = get_json(&c2, &emu2, "secrets-safe/secrets?path=team-a/db&title=password").await;
    assert_eq!(a[0]["Id"], b[0]["Id"]);
    assert_eq!(a[0]["FolderId"], b[0]["FolderId"]);
}

#[tokio::test]
async fn folders_and_safes() {
    let (emu, c) = signed_in("svc-deployer").await;
    let (status, safes) = get_json(&c, &emu, "secrets-safe/safes/").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = safes
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a", "platform"]);
    assert_eq!(safes[0]["Description"], "Team A secrets");
    let safe_id = safes[0]["Id"].as_str().unwrap();
    let (status, one) = get_json(&c, &emu, &format!("secrets-safe/safes/{safe_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["Name"], "team-a");

    let (_, folders) = get_json(&c, &emu, "secrets-safe/folders/").await;
    let names: Vec<&str> = folders
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a", "db", "replica", "a/b", "platform"]);
    let db = &folders[1];
    assert_eq!(db["ParentId"], safes[0]["Id"]);
    for field in [
        "Id",
        "Name",
        "Description",
        "ParentId",
        "UserGroupId",
        "UserId",
        "FolderOwnerId",
    ] {
        assert!(db.get(field).is_some(), "folder field {field}");
    }
    let (_, roots) = get_json(&c, &emu, "secrets-safe/folders?rootOnly=true").await;
    assert_eq!(roots.as_array().unwrap().len(), 2);
    let (_, named) = get_json(&c, &emu, "secrets-safe/folders?folderName=DB").await;
    assert_eq!(named.as_array().unwrap().len(), 1);
    // folderName is "the partial name of the folder": a case-insensitive substring match.
    let names_of = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f["Name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, partial) = get_json(&c, &emu, "secrets-safe/folders?folderName=EPL").await;
    assert_eq!(names_of(&partial), ["replica"]);
    let (_, partial) = get_json(&c, &emu, "secrets-safe/folders?folderName=a").await;
    assert_eq!(names_of(&partial), ["team-a", "replica", "a/b", "platform"]);
    let (_, none) = get_json(&c, &emu, "secrets-safe/folders?folderName=zz").await;
    assert_eq!(none, serde_json::json!([]));
    let (_, under) = get_json(&c, &emu, "secrets-safe/folders?folderPath=team-a/db").await;
    assert_eq!(under.as_array().unwrap().len(), 2, "db and replica");
    let (_, under) = get_json(
        &c,
        &emu,
        "secrets-safe/folders?folderPath=team-a&includeSubFolders=false",
    )
    .await;
    assert_eq!(under.as_array().unwrap().len(), 3, "team-a, db, a/b");

    let db_id = db["Id"].as_str().unwrap();
    let (status, f) = get_json(&c, &emu, &format!("secrets-safe/folders/{db_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f["Name"], "db");
    let (_, secrets) = get_json(&c, &emu, &format!("secrets-safe/folders/{db_id}/secrets")).await;
    assert_eq!(secrets.as_array().unwrap().len(), 3);
    let (_, by_folder_id) = get_json(
        &c,
        &emu,
        &format!("secrets-safe/secrets?folderId={db_id}&title=config"),
    )
    .await;
    assert_eq!(by_folder_id[0]["Title"], "config");

    // A folder id is not a safe id; unknown ids are 404; another team's safe is 403.
    assert_eq!(
        get(&c, &emu, &format!("secrets-safe/safes/{db_id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&c, &emu, "secrets-safe/folders/nope").await.status(),
        StatusCode::NOT_FOUND
    );
    let cb = client(&emu);
    sign_in_b(&cb, &emu).await;
    assert_eq!(
        get(&cb, &emu, &format!("secrets-safe/safes/{safe_id}"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&cb, &emu, &format!("secrets-safe/folders/{db_id}"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}
