//! Operator endpoints under `/_emulator/` (no authentication): state, faults, secret updates.

use std::sync::atomic::Ordering;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    api::{Resp, json_value, sweep_requests},
    limits::LimitConfig,
    routes::Route,
    state::{RequestStatus, Shared, lock, path_key, write},
    util::iso_utc,
};

/// A refused operator call, answered as `{"error": "..."}`.
struct OpErr {
    status: StatusCode,
    msg: String,
}

impl OpErr {
    fn into_resp(self) -> Resp {
        json_value(self.status, &json!({ "error": self.msg }))
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> OpErr {
    OpErr {
        status,
        msg: msg.into(),
    }
}

pub(crate) fn handle(shared: &Shared, method: &Method, lower_path: &str, body: &[u8]) -> Resp {
    match (method, lower_path.trim_end_matches('/')) {
        (&Method::GET, "/_emulator/state") => state(shared),
        (&Method::POST, "/_emulator/faults") => faults(shared, body).unwrap_or_else(OpErr::into_resp),
        (&Method::PUT, "/_emulator/secret") => put_secret(shared, body).unwrap_or_else(OpErr::into_resp),
        (_, "/_emulator/state" | "/_emulator/faults" | "/_emulator/secret") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_resp()
        }
        _ => error(StatusCode::NOT_FOUND, "unknown operator endpoint").into_resp(),
    }
}

fn faults_json(shared: &Shared) -> Value {
    let pending_approval = lock(&shared.requests).pending_approval;
    let f = &shared.faults;
    let mut fail = Map::new();
    let mut drop = Map::new();
    let mut truncate = Map::new();
    for r in Route::ALL {
        let rf = &f.routes[r as usize];
        let n = rf.fail_count.load(Ordering::Acquire);
        if n > 0 {
            fail.insert(
                r.key().into(),
                json!({ "status": rf.fail_status.load(Ordering::Acquire), "count": n }),
            );
        }
        let d = rf.drop_count.load(Ordering::Acquire);
        if d > 0 {
            drop.insert(r.key().into(), json!(d));
        }
        let t = rf.truncate_count.load(Ordering::Acquire);
        if t > 0 {
            truncate.insert(r.key().into(), json!(t));
        }
    }
    json!({
        "latency_ms": f.latency_ms.load(Ordering::Acquire),
        "fail": fail,
        "drop": drop,
        "truncate": truncate,
        "pending_approval": pending_approval,
        "checkin_before_read": f.checkin_before_read.load(Ordering::Acquire),
        "limits": shared.limits.config(),
    })
}

fn state(shared: &Shared) -> Resp {
    let (requests_open, requests_pending) = {
        let mut requests = lock(&shared.requests);
        sweep_requests(shared, &mut requests);
        let count = |s| {
            requests
                .open
                .iter()
                .filter(|i| requests.list[**i].status == s)
                .count()
        };
        (count(RequestStatus::Active), count(RequestStatus::Pending))
    };
    let calls: Map<String, Value> = Route::ALL
        .iter()
        .map(|r| {
            (
                r.key().to_string(),
                json!(shared.calls[*r as usize].load(Ordering::Relaxed)),
            )
        })
        .collect();
    json_value(
        StatusCode::OK,
        &json!({
            "traffic": shared.traffic.to_json(),
            "sessions_open": shared.sessions_open(),
            "requests_open": requests_open,
            "requests_pending": requests_pending,
            "calls": calls,
            "load": shared.limits.counters(),
            "faults": faults_json(shared),
        }),
    )
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailSpec {
    route: String,
    status: u16,
    #[serde(default = "one")]
    count: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropSpec {
    route: String,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    latency_ms: Option<u64>,
    fail: Option<OneOrMany<FailSpec>>,
    drop: Option<OneOrMany<DropSpec>>,
    truncate: Option<OneOrMany<DropSpec>>,
    limits: Option<LimitConfig>,
    checkin_before_read: Option<u32>,
    #[serde(default)]
    reset_counters: bool,
    #[serde(default)]
    expire_sessions: bool,
    #[serde(default)]
    expire_requests: bool,
    pending_approval: Option<bool>,
    #[serde(default)]
    approve_requests: bool,
    #[serde(default)]
    reset: bool,
}

fn route(key: &str) -> Result<Route, OpErr> {
    Route::from_key(key).ok_or_else(|| {
        let keys: Vec<&str> = Route::ALL.iter().map(|r| r.key()).collect();
        error(
            StatusCode::BAD_REQUEST,
            format!("unknown route {key:?}; route keys: {}", keys.join(", ")),
        )
    })
}

fn faults(shared: &Shared, body: &[u8]) -> Result<Resp, OpErr> {
    let b: FaultsBody = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid faults body: {e}")))?;
    // Validate everything before changing anything.
    let fails = b.fail.map(OneOrMany::into_vec).unwrap_or_default();
    let drops = b.drop.map(OneOrMany::into_vec).unwrap_or_default();
    let mut fail_routes = Vec::new();
    for f in &fails {
        if !(200..=599).contains(&f.status) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("status {} is not in 200..=599", f.status),
            ));
        }
        fail_routes.push(route(&f.route)?);
    }
    let drop_routes = drops
        .iter()
        .map(|d| route(&d.route))
        .collect::<Result<Vec<_>, _>>()?;
    let truncates = b.truncate.map(OneOrMany::into_vec).unwrap_or_default();
    let truncate_routes = truncates
        .iter()
        .map(|d| route(&d.route))
        .collect::<Result<Vec<_>, _>>()?;

    let f = &shared.faults;
    if b.reset {
        f.reset();
        shared.limits.set(LimitConfig::default());
        lock(&shared.requests).pending_approval = false;
    }
    if let Some(limits) = b.limits {
        shared.limits.set(limits);
    }
    if b.reset_counters {
        for c in &shared.calls {
            c.store(0, Ordering::Relaxed);
        }
        shared.limits.reset_counters();
    }
    if let Some(p) = b.pending_approval {
        lock(&shared.requests).pending_approval = p;
    }
    if b.approve_requests {
        // Approval releases the request now, for its full duration.
        let mut guard = lock(&shared.requests);
        let requests = &mut *guard;
        let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
        for &i in &requests.open {
            let r = &mut requests.list[i];
            if r.status == RequestStatus::Pending {
                r.status = RequestStatus::Active;
                r.released = wall;
                r.expires = now + r.duration;
                r.expires_wall = wall + r.duration;
            }
        }
    }
    if let Some(ms) = b.latency_ms {
        f.latency_ms.store(ms, Ordering::Release);
    }
    if let Some(n) = b.checkin_before_read {
        f.checkin_before_read.store(n, Ordering::Release);
    }
    for (spec, r) in fails.iter().zip(fail_routes) {
        let rf = &f.routes[r as usize];
        rf.fail_status.store(spec.status, Ordering::Release);
        rf.fail_count.store(spec.count, Ordering::Release);
    }
    for (spec, r) in drops.iter().zip(drop_routes) {
        f.routes[r as usize]
            .drop_count
            .store(spec.count, Ordering::Release);
    }
    for (spec, r) in truncates.iter().zip(truncate_routes) {
        f.routes[r as usize]
            .truncate_count
            .store(spec.count, Ordering::Release);
    }
    if b.expire_sessions {
        write(&shared.sessions).clear();
    }
    if b.expire_requests {
        // As if every open request had reached the end of its DurationMinutes.
        let mut requests = lock(&shared.requests);
        let now = std::time::Instant::now();
        for k in 0..requests.open.len() {
            let i = requests.open[k];
            if requests.list[i].status == RequestStatus::Active {
                requests.list[i].expires = now;
            }
        }
        sweep_requests(shared, &mut requests);
    }
    Ok(json_value(StatusCode::OK, &faults_json(shared)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSecret {
    path: Option<String>,
    title: Option<String>,
    value: Option<String>,
    separator: Option<String>,
    system: Option<String>,
    account: Option<String>,
    password: Option<String>,
}

fn put_secret(shared: &Shared, body: &[u8]) -> Result<Resp, OpErr> {
    let b: PutSecret = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    let cat = &shared.catalog;
    match b {
        PutSecret {
            path: Some(path),
            title: Some(title),
            value: Some(value),
            separator,
            system: None,
            account: None,
            password: None,
        } => {
            let sep = separator.filter(|s| !s.is_empty()).unwrap_or_else(|| "/".into());
            let folder = cat
                .folder_by_path
                .get(&path_key(path.split(sep.as_str()).filter(|s| !s.is_empty())))
                .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no folder {path:?}")))?;
            let idx = *cat
                .secret_by_title
                .get(&(*folder, title.to_lowercase()))
                .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no secret {title:?} in {path:?}")))?;
            shared.set_secret_value(idx, value);
            let s = &cat.secrets[idx];
            Ok(json_value(
                StatusCode::OK,
                &json!({ "updated": "secret", "id": s.id, "type": s.kind.api_name() }),
            ))
        }
        PutSecret {
            system: Some(system),
            account: Some(account),
            password: Some(password),
            path: None,
            title: None,
            value: None,
            separator: None,
        } => {
            let idx = *cat
                .account_by_names
                .get(&(system.to_lowercase(), account.to_lowercase()))
                .ok_or_else(|| {
                    error(
                        StatusCode::NOT_FOUND,
                        format!("no managed account {system}/{account}"),
                    )
                })?;
            let mut accounts = lock(&shared.accounts);
            accounts[idx].password = password;
            accounts[idx].last_change = iso_utc(std::time::SystemTime::now());
            Ok(json_value(
                StatusCode::OK,
                &json!({ "updated": "managed_account" }),
            ))
        }
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "expected {\"path\", \"title\", \"value\"[, \"separator\"]} or {\"system\", \"account\", \"password\"}",
        )),
    }
}
