//! Handlers of the Password Safe API routes. Each takes a parsed [`Call`] and returns a complete
//! response; none of them blocks or awaits.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::Full;
use hyper::{
    HeaderMap, Response, StatusCode,
    header::{self, HeaderValue},
};
use serde_json::{Value, json};

use crate::{
    routes::Route,
    seed::SecretKind,
    state::{
        AccountMeta, Principal, RequestRec, RequestStatus, Requests, Session, Shared, Token, lock, path_key,
        read, write,
    },
    util::{Query, base64url, cookie_value, iso_utc, random_bytes, random_string},
};

pub(crate) type Resp = Response<Full<Bytes>>;

/// The session cookie (ASP.NET's name, as the real server is an ASP.NET application).
pub const SESSION_COOKIE: &str = "ASP.NET_SessionId";

/// The body of every refused SignAppIn, as observed from real servers.
pub const AUTH_FAILED: &str = "Failed to authenticate due to one or more authentication rules.";
/// The body of a call without a valid session.
pub const NOT_SIGNED_IN: &str = "User not authenticated: sign in with POST Auth/SignAppIn";
/// The body of an unknown managed account (exact text of the real server).
pub const ACCOUNT_NOT_FOUND: &str = "Managed Account not found";

const JSON: &str = "application/json; charset=utf-8";

/// One API call, parsed.
pub(crate) struct Call<'a> {
    pub shared: &'a Shared,
    pub id: Option<&'a str>,
    pub query: Query<'a>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub client_cert: bool,
}

pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    respond(status, JSON, body)
}

pub(crate) fn json_value(status: StatusCode, v: &Value) -> Resp {
    json_bytes(status, serde_json::to_vec(v).unwrap_or_default())
}

/// An error body in the server's usual form: a JSON-encoded string.
pub(crate) fn json_string(status: StatusCode, msg: &str) -> Resp {
    json_value(status, &Value::String(msg.to_string()))
}

pub(crate) fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub(crate) fn dispatch(route: Route, call: &Call<'_>) -> Resp {
    let result = match route {
        Route::Token => Ok(token(call)),
        Route::SignAppIn => Ok(sign_app_in(call)),
        Route::Signout => Ok(sign_out(call)),
        Route::Secrets => secrets(call),
        Route::SecretById => secret_by_id(call),
        Route::SecretFileDownload => file_download(call),
        Route::Folders => folders(call),
        Route::FolderById => folder_by_id(call),
        Route::FolderSecrets => folder_secrets(call),
        Route::Safes => safes(call),
        Route::SafeById => safe_by_id(call),
        Route::ManagedAccounts => managed_accounts(call),
        Route::PostRequests => post_requests(call),
        Route::GetRequests => get_requests(call),
        Route::Credentials => credentials(call),
        Route::Checkin => checkin(call),
    };
    result.unwrap_or_else(ApiErr::into_resp)
}

/// A refused call: its status and error text (sent as a JSON string).
pub(crate) struct ApiErr {
    status: StatusCode,
    msg: std::borrow::Cow<'static, str>,
}

fn err(status: StatusCode, msg: impl Into<std::borrow::Cow<'static, str>>) -> ApiErr {
    ApiErr {
        status,
        msg: msg.into(),
    }
}

impl ApiErr {
    fn into_resp(self) -> Resp {
        json_string(self.status, &self.msg)
    }
}

type Result<T> = std::result::Result<T, ApiErr>;

fn bad_request(msg: &str) -> ApiErr {
    err(StatusCode::BAD_REQUEST, msg.to_string())
}

// ---------------------------------------------------------------- authentication

fn oauth_error(error: &str) -> Resp {
    json_value(StatusCode::BAD_REQUEST, &json!({ "error": error }))
}

fn token(call: &Call<'_>) -> Resp {
    let (mut id, mut secret, mut grant) = (None, None, None);
    for (k, v) in form_urlencoded::parse(&call.body) {
        match k.as_ref() {
            "client_id" => id = Some(v.into_owned()),
            "client_secret" => secret = Some(v.into_owned()),
            "grant_type" => grant = Some(v.into_owned()),
            _ => {}
        }
    }
    match grant.as_deref() {
        None => return oauth_error("invalid_request"),
        Some("client_credentials") => {}
        Some(_) => return oauth_error("unsupported_grant_type"),
    }
    let (Some(id), Some(secret)) = (id, secret) else {
        return oauth_error("invalid_client");
    };
    let cat = &call.shared.catalog;
    let Some(client) = cat.oauth.get(&id.to_lowercase()) else {
        return oauth_error("invalid_client");
    };
    if !constant_time_eq(client.client_secret.as_bytes(), secret.as_bytes()) {
        return oauth_error("invalid_client");
    }
    let now = Instant::now();
    let exp = SystemTime::now() + client.ttl;
    let exp_secs = exp
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let header = base64url(br#"{"alg":"RS256","typ":"at+jwt"}"#);
    let payload = base64url(
        json!({
            "iss": "ps-emulator",
            "client_id": id,
            "sub": client.principal.name,
            "scope": "publicapi",
            "exp": exp_secs,
            "jti": crate::util::hex(&random_bytes::<16>()),
        })
        .to_string()
        .as_bytes(),
    );
    // The canary goes into the signature segment: its characters are base64url's, so the token
    // keeps the JWT's three-segment shape.
    let access_token = format!(
        "{header}.{payload}.{}{}",
        call.shared.canary("oauth-token"),
        base64url(&random_bytes::<32>())
    );
    {
        let mut tokens = lock(&call.shared.tokens);
        if call.shared.sweep_due() {
            tokens.retain(|_, t| t.expires > now);
        }
        tokens.insert(
            access_token.clone(),
            Token {
                principal: Arc::clone(&client.principal),
                expires: now + client.ttl,
            },
        );
    }
    json_value(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": client.ttl.as_secs(),
            "token_type": "Bearer",
            "scope": "publicapi",
        }),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The fields of a `PS-Auth` header.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PsAuth {
    pub key: Option<String>,
    pub runas: Option<String>,
    pub pwd: Option<String>,
}

/// Parses the parameters after the `PS-Auth` scheme leniently (passwordsafe-api.md §3.1): split
/// on `;`, trim, `name=value` with case-insensitive names, optional quotes, `[...]` around `pwd`.
pub(crate) fn parse_ps_auth(params: &str) -> PsAuth {
    let mut out = PsAuth::default();
    for part in params.split(';') {
        let Some((name, value)) = part.trim().split_once('=') else {
            continue;
        };
        let mut value = value.trim();
        for q in ['"', '\''] {
            if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
                value = &value[1..value.len() - 1];
            }
        }
        let name = name.trim();
        if name.eq_ignore_ascii_case("key") {
            out.key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("runas") {
            // `domain\\user` written by scripting tools that escape the backslash.
            out.runas = Some(value.replace("\\\\", "\\"));
        } else if name.eq_ignore_ascii_case("pwd") {
            let v = value
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .unwrap_or(value);
            out.pwd = Some(v.to_string());
        }
    }
    out
}

/// The principal authenticated by a SignAppIn `Authorization` header, if any.
fn authenticate(shared: &Shared, authorization: &str) -> Option<Arc<Principal>> {
    let authorization = authorization.trim();
    let (scheme, params) = authorization
        .split_once(char::is_whitespace)
        .unwrap_or((authorization, ""));
    if scheme.eq_ignore_ascii_case("PS-Auth") {
        let auth = parse_ps_auth(params);
        let cat = &shared.catalog;
        let users = cat.api_keys.get(auth.key.as_deref()?)?;
        let runas = auth.runas?.to_lowercase();
        if !users.contains(&runas) {
            return None;
        }
        let user = cat.users.get(&runas)?;
        if let Some(expected) = &user.password {
            let given = auth.pwd?;
            if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                return None;
            }
        }
        Some(Arc::clone(&user.principal))
    } else if scheme.eq_ignore_ascii_case("Bearer") {
        let token = params.trim();
        let mut tokens = lock(&shared.tokens);
        let t = tokens.get(token)?;
        if t.expires <= Instant::now() {
            tokens.remove(token);
            return None;
        }
        Some(Arc::clone(&t.principal))
    } else {
        None
    }
}

fn sign_app_in(call: &Call<'_>) -> Resp {
    let shared = call.shared;
    let fail = || json_string(StatusCode::UNAUTHORIZED, AUTH_FAILED);
    if shared.require_client_cert && !call.client_cert {
        return fail();
    }
    let Some(principal) = call
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| authenticate(shared, v))
    else {
        return fail();
    };
    let id = shared.canary("session") + &random_string(24, b"abcdefghijklmnopqrstuvwxyz012345");
    let now = shared.now_ms();
    let idle = u64::try_from(shared.session_idle.as_millis()).unwrap_or(u64::MAX);
    {
        let mut sessions = write(&shared.sessions);
        if shared.sweep_due() {
            sessions.retain(|_, s| now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) <= idle);
        }
        sessions.insert(
            id.clone(),
            Arc::new(Session {
                principal: Arc::clone(&principal),
                last_seen: now.into(),
            }),
        );
        shared.traffic.sessions(sessions.len());
    }
    let mut r = json_value(
        StatusCode::OK,
        &json!({
            "UserId": principal.user_id,
            "SID": null,
            "EmailAddress": null,
            "UserName": principal.name,
            "Name": principal.name,
        }),
    );
    let cookie = format!("{SESSION_COOKIE}={id}; path=/; secure; HttpOnly; SameSite=Lax");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(crate) fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie_value(v, SESSION_COOKIE))
}

fn sign_out(call: &Call<'_>) -> Resp {
    if let Some(id) = session_id(call.headers) {
        write(&call.shared.sessions).remove(id);
    }
    empty(StatusCode::OK)
}

/// The principal of the call's session; 401 without a valid one. Touches the session.
fn principal(call: &Call<'_>) -> Result<Arc<Principal>> {
    let unauthorized = || err(StatusCode::UNAUTHORIZED, NOT_SIGNED_IN);
    let id = session_id(call.headers).ok_or_else(unauthorized)?;
    let shared = call.shared;
    let now = shared.now_ms();
    let idle = u64::try_from(shared.session_idle.as_millis()).unwrap_or(u64::MAX);
    let expired = {
        let sessions = read(&shared.sessions);
        let s = sessions.get(id).ok_or_else(unauthorized)?;
        if now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) <= idle {
            s.last_seen.fetch_max(now, Ordering::Relaxed);
            return Ok(Arc::clone(&s.principal));
        }
        true
    };
    if expired {
        write(&shared.sessions).remove(id);
    }
    Err(unauthorized())
}

// ---------------------------------------------------------------- Secrets Safe

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V30,
    V31,
    V32,
}

fn version(call: &Call<'_>) -> Result<Version> {
    match call.query.get("version").map(str::trim) {
        None | Some("") | Some("3.0") => Ok(Version::V30),
        Some("3.1") => Ok(Version::V31),
        Some("3.2" | "3.3" | "3.4" | "3.5") => Ok(Version::V32),
        Some(other) => Err(bad_request(&format!("Invalid API version '{other}'"))),
    }
}

fn decrypt(call: &Call<'_>) -> bool {
    !call
        .query
        .get("decrypt")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

fn paging(call: &Call<'_>) -> Result<(usize, usize)> {
    let num = |name: &str, default: usize| -> Result<usize> {
        match call.query.get(name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad_request(&format!("Invalid value for '{name}'"))),
        }
    };
    Ok((num("limit", 1000)?, num("offset", 0)?))
}

fn forbidden_safe() -> ApiErr {
    err(
        StatusCode::FORBIDDEN,
        "4031 - Access denied: the user has no read access to this safe",
    )
}

fn can_read_safe(shared: &Shared, p: &Principal, safe: usize) -> bool {
    p.in_any(&shared.catalog.safes[safe].readers)
}

/// Writes the list response: a bare array (3.0/3.1) or `{TotalCount, Data}` (3.2).
fn secret_list(call: &Call<'_>, v: Version, found: &[usize]) -> Result<Resp> {
    let (limit, offset) = paging(call)?;
    let with_password = decrypt(call);
    let page = found.iter().skip(offset).take(limit);
    let secrets = read(&call.shared.secrets);
    let mut body = BytesMut::with_capacity(64 + found.len().min(limit) * 1024);
    if v == Version::V32 {
        body.put_slice(format!("{{\"TotalCount\":{},\"Data\":", found.len()).as_bytes());
    }
    body.put_u8(b'[');
    for (n, i) in page.enumerate() {
        if n > 0 {
            body.put_u8(b',');
        }
        let s = &secrets[*i];
        body.put_slice(if with_password {
            &s.json
        } else {
            &s.json_no_password
        });
    }
    body.put_u8(b']');
    if v == Version::V32 {
        body.put_u8(b'}');
    }
    Ok(json_bytes(StatusCode::OK, body.freeze()))
}

fn secrets(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let v = version(call)?;
    let shared = call.shared;
    let cat = &shared.catalog;
    let sep = call
        .query
        .get("separator")
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    let title = call.query.get("title").filter(|t| !t.is_empty());
    let after = call.query.get("afterdate").filter(|a| !a.is_empty());

    let folder = match (
        call.query.get("path").filter(|p| !p.trim().is_empty()),
        call.query.get("folderid"),
    ) {
        (Some(path), _) => {
            let key = path_key(path.split(sep).filter(|s| !s.is_empty()));
            match cat.folder_by_path.get(&key) {
                Some(f) => Some(*f),
                None => return secret_list(call, v, &[]),
            }
        }
        (None, Some(id)) if !id.is_empty() => match cat.folder_by_id.get(&id.trim().to_lowercase()) {
            Some(f) => Some(*f),
            None => return secret_list(call, v, &[]),
        },
        _ => None,
    };

    let mut found: Vec<usize> = match (folder, title) {
        (Some(f), _) if !can_read_safe(shared, &p, cat.folders[f].safe) => return Err(forbidden_safe()),
        (Some(f), Some(t)) => cat
            .secret_by_title
            .get(&(f, t.to_lowercase()))
            .copied()
            .into_iter()
            .collect(),
        (Some(f), None) => cat.folders[f].secrets.clone(),
        (None, t) => {
            let t = t.map(str::to_lowercase);
            (0..cat.secrets.len())
                .filter(|i| can_read_safe(shared, &p, cat.secrets[*i].safe))
                .filter(|i| {
                    t.as_ref()
                        .is_none_or(|t| cat.secrets[*i].title.to_lowercase() == *t)
                })
                .collect()
        }
    };
    if let Some(after) = after {
        let secrets = read(&shared.secrets);
        let cut = &after[..after.len().min(19)];
        found.retain(|i| secrets[*i].modified[..19] >= *cut);
    }
    secret_list(call, v, &found)
}

/// The secret named by the `{id}` segment, if the caller may read it.
fn readable_secret(call: &Call<'_>, p: &Principal) -> Result<usize> {
    let cat = &call.shared.catalog;
    let id = call.id.unwrap_or_default();
    let idx = *cat
        .secret_by_id
        .get(id)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "Secret not found"))?;
    if !can_read_safe(call.shared, p, cat.secrets[idx].safe) {
        return Err(forbidden_safe());
    }
    Ok(idx)
}

fn secret_by_id(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    version(call)?;
    let idx = readable_secret(call, &p)?;
    let secrets = read(&call.shared.secrets);
    let s = &secrets[idx];
    Ok(json_bytes(
        StatusCode::OK,
        if decrypt(call) {
            s.json.clone()
        } else {
            s.json_no_password.clone()
        },
    ))
}

fn file_download(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    version(call)?;
    let idx = readable_secret(call, &p)?;
    let meta = &call.shared.catalog.secrets[idx];
    if meta.kind != SecretKind::File {
        return Err(bad_request("The secret is not a file secret"));
    }
    let content = read(&call.shared.secrets)[idx].value.clone();
    let mut r = respond(StatusCode::OK, "application/octet-stream", content);
    let name = meta
        .file_name
        .as_deref()
        .unwrap_or("file")
        .replace(['"', '\r', '\n'], "_");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

fn folder_json(shared: &Shared, f: usize) -> Value {
    let cat = &shared.catalog;
    let folder = &cat.folders[f];
    json!({
        "Id": folder.id,
        "Name": folder.name,
        "Description": folder.description,
        "ParentId": folder.parent.map(|p| cat.folders[p].id.clone()),
        "UserGroupId": null,
        "UserId": null,
        "FolderOwnerId": null,
        "FolderPath": shared.folder_path(f),
    })
}

fn bool_param(call: &Call<'_>, name: &str, default: bool) -> Result<bool> {
    match call.query.get(name).map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(bad_request(&format!("Invalid value for '{name}'"))),
    }
}

fn folders(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let shared = call.shared;
    let cat = &shared.catalog;
    let name = call
        .query
        .get("foldername")
        .filter(|n| !n.is_empty())
        .map(str::to_lowercase);
    let root_only = bool_param(call, "rootonly", false)?;
    let include_sub = bool_param(call, "includesubfolders", true)?;
    let base = match call.query.get("folderpath").filter(|p| !p.trim().is_empty()) {
        Some(path) => {
            let key = path_key(path.split(['/', '\\']).filter(|s| !s.is_empty()));
            match cat.folder_by_path.get(&key) {
                Some(f) => Some(*f),
                None => return Ok(json_value(StatusCode::OK, &json!([]))),
            }
        }
        None => None,
    };
    let (limit, offset) = paging(call)?;
    let is_under = |f: usize, base: usize| {
        let mut cur = cat.folders[f].parent;
        while let Some(c) = cur {
            if c == base {
                return true;
            }
            if !include_sub {
                return false;
            }
            cur = cat.folders[c].parent;
        }
        false
    };
    let list: Vec<Value> = (0..cat.folders.len())
        .filter(|f| can_read_safe(shared, &p, cat.folders[*f].safe))
        .filter(|f| !root_only || cat.folders[*f].parent.is_none())
        // `folderName` is "the partial name of the folder" (API guide, quoted by BeyondTrust's
        // Python library): a case-insensitive substring match.
        .filter(|f| {
            name.as_ref()
                .is_none_or(|n| cat.folders[*f].name.to_lowercase().contains(n.as_str()))
        })
        .filter(|f| base.is_none_or(|b| *f == b || is_under(*f, b)))
        .skip(offset)
        .take(limit)
        .map(|f| folder_json(shared, f))
        .collect();
    Ok(json_value(StatusCode::OK, &Value::Array(list)))
}

fn readable_folder(call: &Call<'_>, p: &Principal, kind: &str, safes_only: bool) -> Result<usize> {
    let cat = &call.shared.catalog;
    let not_found = || err(StatusCode::NOT_FOUND, format!("{kind} not found"));
    let f = *cat
        .folder_by_id
        .get(call.id.unwrap_or_default())
        .ok_or_else(not_found)?;
    if safes_only && cat.folders[f].parent.is_some() {
        return Err(not_found());
    }
    if !can_read_safe(call.shared, p, cat.folders[f].safe) {
        return Err(forbidden_safe());
    }
    Ok(f)
}

fn folder_by_id(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let f = readable_folder(call, &p, "Folder", false)?;
    Ok(json_value(StatusCode::OK, &folder_json(call.shared, f)))
}

fn folder_secrets(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let v = version(call)?;
    let f = readable_folder(call, &p, "Folder", false)?;
    secret_list(call, v, &call.shared.catalog.folders[f].secrets)
}

fn safe_json(shared: &Shared, f: usize) -> Value {
    let folder = &shared.catalog.folders[f];
    json!({ "Id": folder.id, "Name": folder.name, "Description": folder.description })
}

fn safes(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let shared = call.shared;
    let list: Vec<Value> = shared
        .catalog
        .safes
        .iter()
        .filter(|s| p.in_any(&s.readers))
        .map(|s| safe_json(shared, s.folder))
        .collect();
    Ok(json_value(StatusCode::OK, &Value::Array(list)))
}

fn safe_by_id(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let f = readable_folder(call, &p, "Safe", true)?;
    Ok(json_value(StatusCode::OK, &safe_json(call.shared, f)))
}

// ---------------------------------------------------------------- managed accounts

fn no_requestor_role() -> ApiErr {
    err(
        StatusCode::FORBIDDEN,
        "4031 - The user does not have the Requestor role on this managed account",
    )
}

fn account_json(meta: &AccountMeta, last_change: &str) -> Value {
    json!({
        "PlatformID": 4,
        "SystemId": meta.system_id,
        "SystemName": meta.system,
        "DomainName": null,
        "AccountId": meta.account_id,
        "AccountName": meta.account,
        "InstanceName": "",
        "UserPrincipalName": null,
        "ApplicationID": null,
        "ApplicationDisplayName": null,
        "DefaultReleaseDuration": 120,
        "MaximumReleaseDuration": 10080,
        "LastChangeDate": last_change,
        "NextChangeDate": null,
        "IsChanging": false,
        "ChangeState": 0,
        "IsISAAccess": false,
        "PreferredNodeID": meta.preferred_node,
        "AccountDescription": meta.description,
    })
}

fn managed_accounts(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let shared = call.shared;
    let cat = &shared.catalog;
    if !cat.accounts.iter().any(|a| p.in_any(&a.requestors)) {
        return Err(no_requestor_role());
    }
    let system = call.query.get("systemname").filter(|s| !s.is_empty());
    let account = call.query.get("accountname").filter(|s| !s.is_empty());
    let accounts = lock(&shared.accounts);
    if let (Some(system), Some(account)) = (system, account) {
        let idx = cat
            .account_by_names
            .get(&(system.to_lowercase(), account.to_lowercase()))
            .filter(|i| p.in_any(&cat.accounts[**i].requestors))
            .ok_or_else(|| err(StatusCode::NOT_FOUND, ACCOUNT_NOT_FOUND))?;
        return Ok(json_value(
            StatusCode::OK,
            &account_json(&cat.accounts[*idx], &accounts[*idx].last_change),
        ));
    }
    let (limit, offset) = paging(call)?;
    let (system, account) = (system.map(str::to_lowercase), account.map(str::to_lowercase));
    let list: Vec<Value> = cat
        .accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| p.in_any(&a.requestors))
        .filter(|(_, a)| system.as_ref().is_none_or(|s| a.system.to_lowercase() == *s))
        .filter(|(_, a)| account.as_ref().is_none_or(|s| a.account.to_lowercase() == *s))
        .skip(offset)
        .take(limit)
        .map(|(i, a)| account_json(a, &accounts[i].last_change))
        .collect();
    Ok(json_value(StatusCode::OK, &Value::Array(list)))
}

/// A new password after a rotation.
fn new_password(shared: &Shared) -> String {
    shared.canary("rotated-pw")
        + &random_string(
            24,
            b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%+-=",
        )
}

/// Ends a request (check-in or expiry), rotating the password when both the account and the
/// request ask for it.
fn close_request(shared: &Shared, r: &mut RequestRec, status: RequestStatus) {
    r.status = status;
    if r.rotate_on_checkin && shared.catalog.accounts[r.account].rotate_on_checkin {
        let mut accounts = lock(&shared.accounts);
        accounts[r.account].password = new_password(shared);
        accounts[r.account].last_change = iso_utc(SystemTime::now());
    }
}

/// Marks released requests whose time has passed as expired.
pub(crate) fn sweep_requests(shared: &Shared, requests: &mut Requests) {
    let now = Instant::now();
    let mut closed = false;
    for k in 0..requests.open.len() {
        let r = &mut requests.list[requests.open[k]];
        if r.status == RequestStatus::Active && r.expires <= now {
            close_request(shared, r, RequestStatus::Expired);
            closed = true;
        }
    }
    if closed {
        requests.prune();
    }
}

fn int_field(body: &Value, name: &str) -> Result<Option<i64>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad_request(&format!("Invalid {name}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad_request(&format!("Invalid {name}"))),
        Some(_) => Err(bad_request(&format!("Invalid {name}"))),
    }
}

fn str_field<'v>(body: &'v Value, name: &str) -> Result<Option<&'v str>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_request(&format!("Invalid {name}"))),
    }
}

/// A JSON object body; field names are matched case-insensitively like ASP.NET model binding.
fn object_body(body: &[u8]) -> Result<Value> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad_request("The request body is not valid JSON"))?;
    let Value::Object(map) = v else {
        return Err(bad_request("The request body must be a JSON object"));
    };
    Ok(Value::Object(
        map.into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    ))
}

fn post_requests(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let shared = call.shared;
    let body = object_body(&call.body)?;
    let system_id = int_field(&body, "systemid")?.ok_or_else(|| bad_request("SystemID is required"))?;
    let account_id = int_field(&body, "accountid")?.ok_or_else(|| bad_request("AccountID is required"))?;
    let duration =
        int_field(&body, "durationminutes")?.ok_or_else(|| bad_request("DurationMinutes is required"))?;
    if !(1..=525_600).contains(&duration) {
        return Err(bad_request("DurationMinutes must be between 1 and 525600"));
    }
    let access_type = match str_field(&body, "accesstype")?.unwrap_or("View") {
        t if t.eq_ignore_ascii_case("view") => "View",
        t if t.eq_ignore_ascii_case("rdp") => "RDP",
        t if t.eq_ignore_ascii_case("ssh") => "SSH",
        t if t.eq_ignore_ascii_case("app") => "App",
        _ => return Err(bad_request("AccessType must be one of View, RDP, SSH, App")),
    };
    let application_id = int_field(&body, "applicationid")?;
    if access_type == "App" && application_id.is_none() {
        return Err(bad_request("ApplicationID is required when AccessType is App"));
    }
    let reason = str_field(&body, "reason")?.unwrap_or_default();
    if reason.chars().count() > 1000 {
        return Err(bad_request("Reason is longer than 1000 characters"));
    }
    #[derive(PartialEq)]
    enum Conflict {
        Fail,
        Reuse,
        Renew,
    }
    let conflict = match str_field(&body, "conflictoption")? {
        None | Some("") => Conflict::Fail,
        Some(c) if c.eq_ignore_ascii_case("reuse") => Conflict::Reuse,
        Some(c) if c.eq_ignore_ascii_case("renew") => Conflict::Renew,
        Some(_) => return Err(bad_request("ConflictOption must be reuse or renew")),
    };
    let rotate = match body.get("rotateoncheckin") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("Invalid RotateOnCheckin")),
    };

    let cat = &shared.catalog;
    let account = cat
        .accounts
        .iter()
        .position(|a| i64::from(a.system_id) == system_id && i64::from(a.account_id) == account_id)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, ACCOUNT_NOT_FOUND))?;
    if !p.in_any(&cat.accounts[account].requestors) {
        return Err(no_requestor_role());
    }

    let mut guard = lock(&shared.requests);
    let requests = &mut *guard;
    sweep_requests(shared, requests);
    let existing = requests.open.iter().copied().find(|i| {
        let r = &requests.list[*i];
        r.owner == p.owner && r.account == account && r.access_type == access_type
    });
    if let Some(i) = existing {
        match conflict {
            Conflict::Reuse => {
                return Ok(json_bytes(StatusCode::OK, requests.list[i].id.to_string()));
            }
            Conflict::Fail => {
                return Err(err(
                    StatusCode::CONFLICT,
                    "4091 - A request for this account already exists; use ConflictOption reuse or renew",
                ));
            }
            Conflict::Renew => {
                for k in 0..requests.open.len() {
                    let r = &mut requests.list[requests.open[k]];
                    if r.owner == p.owner && r.account == account {
                        r.status = RequestStatus::Cancelled;
                    }
                }
                requests.prune();
            }
        }
    }
    let id = requests.next_id;
    requests.next_id += 1;
    let minutes = Duration::from_secs(u64::try_from(duration).unwrap_or(1) * 60);
    let status = if requests.pending_approval {
        RequestStatus::Pending
    } else {
        RequestStatus::Active
    };
    requests.open.push(requests.list.len());
    requests.list.push(RequestRec {
        id,
        owner: p.owner.clone(),
        account,
        access_type: access_type.to_string(),
        application_id,
        reason: reason.to_string(),
        released: SystemTime::now(),
        duration: minutes,
        expires: Instant::now() + minutes,
        expires_wall: SystemTime::now() + minutes,
        status,
        rotate_on_checkin: rotate,
    });
    Ok(json_bytes(StatusCode::CREATED, id.to_string()))
}

fn get_requests(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let shared = call.shared;
    let filter = call
        .query
        .get("status")
        .unwrap_or("all")
        .trim()
        .to_ascii_lowercase();
    if !["all", "active", "pending"].contains(&filter.as_str()) {
        return Err(bad_request("status must be all, active or pending"));
    }
    if call
        .query
        .get("queue")
        .is_some_and(|q| q.trim().eq_ignore_ascii_case("app"))
    {
        // The approver queue: the emulator approves automatically, nothing waits there.
        return Ok(json_value(StatusCode::OK, &json!([])));
    }
    let mut requests = lock(&shared.requests);
    sweep_requests(shared, &mut requests);
    let cat = &shared.catalog;
    // `status=all` means "both active and pending requests" (API guide, quoted by BeyondTrust's
    // Python library): checked-in, expired and cancelled requests are never listed.
    let list: Vec<Value> = requests
        .open
        .iter()
        .map(|i| &requests.list[*i])
        .filter(|r| r.owner == p.owner)
        .filter(|r| match filter.as_str() {
            "active" => r.status == RequestStatus::Active,
            "pending" => r.status == RequestStatus::Pending,
            _ => true,
        })
        .map(|r| {
            let a = &cat.accounts[r.account];
            let released = iso_utc(r.released);
            json!({
                "RequestID": r.id,
                "SystemID": a.system_id,
                "SystemName": a.system,
                "AccountID": a.account_id,
                "AccountName": a.account,
                "DomainName": null,
                "AliasID": null,
                "ApplicationID": r.application_id,
                "RequestReleaseDate": released,
                "ApprovedDate": released,
                "ExpiresDate": iso_utc(r.expires_wall),
                "Status": r.status.api_name(),
                "AccessType": r.access_type,
                "Reason": r.reason,
            })
        })
        .collect();
    Ok(json_value(StatusCode::OK, &Value::Array(list)))
}

/// The caller's open request named by `{id}`.
fn own_open_request(call: &Call<'_>, p: &Principal, requests: &Requests) -> Result<usize> {
    let not_found = || err(StatusCode::NOT_FOUND, "Request not found");
    let id: u64 = call.id.unwrap_or_default().parse().map_err(|_| not_found())?;
    let i = requests.index_of(id).ok_or_else(not_found)?;
    let r = &requests.list[i];
    if r.owner != p.owner {
        return Err(err(
            StatusCode::FORBIDDEN,
            "4031 - The request belongs to another user",
        ));
    }
    if !r.status.is_open() {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!("4034 - The request is not active ({})", r.status.api_name()),
        ));
    }
    Ok(i)
}

fn credentials(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let shared = call.shared;
    let kind = call
        .query
        .get("type")
        .unwrap_or("password")
        .trim()
        .to_ascii_lowercase();
    if !["password", "dsskey", "passphrase"].contains(&kind.as_str()) {
        return Err(bad_request("type must be password, dsskey or passphrase"));
    }
    let mut requests = lock(&shared.requests);
    sweep_requests(shared, &mut requests);
    let i = own_open_request(call, &p, &requests)?;
    if requests.list[i].status == RequestStatus::Active && shared.faults.take_checkin_before_read() {
        // Fault: another client of the same user checked the shared request in just now.
        close_request(shared, &mut requests.list[i], RequestStatus::CheckedIn);
        requests.prune();
        own_open_request(call, &p, &requests)?;
    }
    if requests.list[i].status == RequestStatus::Pending {
        return Err(err(
            StatusCode::FORBIDDEN,
            "4035 - The request is pending approval",
        ));
    }
    let account = requests.list[i].account;
    drop(requests);
    let value = if kind == "password" {
        lock(&shared.accounts)[account].password.clone()
    } else {
        String::new()
    };
    Ok(json_value(StatusCode::OK, &Value::String(value)))
}

fn checkin(call: &Call<'_>) -> Result<Resp> {
    let p = principal(call)?;
    let shared = call.shared;
    if !call.body.iter().all(u8::is_ascii_whitespace) {
        let body = object_body(&call.body)?;
        if str_field(&body, "reason")?.is_some_and(|r| r.chars().count() > 1000) {
            return Err(bad_request("Reason is longer than 1000 characters"));
        }
    }
    let mut requests = lock(&shared.requests);
    sweep_requests(shared, &mut requests);
    let i = own_open_request(call, &p, &requests)?;
    let r = &mut requests.list[i];
    if r.status == RequestStatus::Pending {
        // Never released: nothing to rotate.
        r.status = RequestStatus::CheckedIn;
    } else {
        close_request(shared, r, RequestStatus::CheckedIn);
    }
    requests.prune();
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ps(key: &str, runas: &str, pwd: Option<&str>) -> PsAuth {
        PsAuth {
            key: Some(key.into()),
            runas: Some(runas.into()),
            pwd: pwd.map(Into::into),
        }
    }

    #[test]
    fn ps_auth_variants() {
        let cases = [
            ("key=K; runas=u; pwd=[p];", ps("K", "u", Some("p"))),
            ("key=K;runas=u;", ps("K", "u", None)),
            ("key=K; runas=u", ps("K", "u", None)),
            ("KEY=K ;  RunAs=u ; PWD=[p]", ps("K", "u", Some("p"))),
            (r#"key="K"; runas="u"; pwd="[p]";"#, ps("K", "u", Some("p"))),
            ("key='K'; runas='u';", ps("K", "u", None)),
            (r"key=K; runas=dom\\u;", ps("K", r"dom\u", None)),
            ("key=K; runas=u; pwd=p", ps("K", "u", Some("p"))),
            ("key=K; runas=u; pwd=[];", ps("K", "u", Some(""))),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_ps_auth(input), expected, "{input}");
        }
        assert_eq!(parse_ps_auth("garbage"), PsAuth::default());
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
