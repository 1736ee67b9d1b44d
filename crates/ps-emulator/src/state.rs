//! The emulator's data: an immutable catalog built once from the seed (with precomputed lookup
//! maps), and the mutable parts (secret values, account passwords, sessions, tokens, requests,
//! faults, call counters) behind cheap locks.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use serde::Serialize;

use crate::{
    Options,
    limits::Limits,
    routes::{ROUTE_COUNT, Route},
    seed::{DEFAULT_TOKEN_TTL_SECONDS, RawFolder, RawSecret, SecretKind, Seed},
    traffic::Traffic,
    util::{guid_from, hex, iso_utc},
};

/// The identity behind a session: a run-as user (API key) or an OAuth application user.
#[derive(Debug)]
pub(crate) struct Principal {
    pub user_id: u32,
    pub name: String,
    /// Lower-cased name; requests belong to it.
    pub owner: String,
    pub groups: Vec<u32>,
}

impl Principal {
    pub(crate) fn in_any(&self, groups: &[u32]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }
}

pub(crate) struct UserRec {
    pub password: Option<String>,
    pub principal: Arc<Principal>,
}

pub(crate) struct OauthRec {
    pub client_secret: String,
    pub ttl: Duration,
    pub principal: Arc<Principal>,
}

pub(crate) struct FolderRec {
    pub id: String,
    pub name: String,
    pub description: String,
    pub parent: Option<usize>,
    pub safe: usize,
    /// Path of folder names from the safe down, for `FolderPath`.
    pub segments: Vec<String>,
    pub secrets: Vec<usize>,
}

pub(crate) struct SafeRec {
    pub folder: usize,
    pub readers: Vec<u32>,
}

pub(crate) struct SecretMeta {
    pub id: String,
    pub title: String,
    pub kind: SecretKind,
    pub folder: usize,
    pub safe: usize,
    pub username: Option<String>,
    pub description: String,
    pub notes: String,
    pub file_name: Option<String>,
}

/// A secret's value and its cached JSON, rebuilt when the value changes.
pub(crate) struct SecretDyn {
    pub value: String,
    pub modified: String,
    /// The secret object with `Password` (decrypt) and without it.
    pub json: Bytes,
    pub json_no_password: Bytes,
}

pub(crate) struct AccountMeta {
    pub system_id: u32,
    pub account_id: u32,
    pub system: String,
    pub account: String,
    pub description: String,
    pub requestors: Vec<u32>,
    pub rotate_on_checkin: bool,
    pub preferred_node: String,
}

pub(crate) struct AccountDyn {
    pub password: String,
    pub last_change: String,
}

/// Everything fixed at start.
pub(crate) struct Catalog {
    pub users: HashMap<String, UserRec>,
    pub api_keys: HashMap<String, Vec<String>>,
    pub oauth: HashMap<String, OauthRec>,
    pub groups: Vec<String>,
    pub safes: Vec<SafeRec>,
    pub folders: Vec<FolderRec>,
    /// Lower-cased folder names joined with U+0000 → folder.
    pub folder_by_path: HashMap<String, usize>,
    pub folder_by_id: HashMap<String, usize>,
    pub secrets: Vec<SecretMeta>,
    pub secret_by_id: HashMap<String, usize>,
    /// (folder, lower-cased title) → secret.
    pub secret_by_title: HashMap<(usize, String), usize>,
    pub accounts: Vec<AccountMeta>,
    pub account_by_names: HashMap<(String, String), usize>,
    pub created: String,
}

pub(crate) struct Session {
    pub principal: Arc<Principal>,
    /// Milliseconds since the emulator started.
    pub last_seen: AtomicU64,
}

pub(crate) struct Token {
    pub principal: Arc<Principal>,
    pub expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestStatus {
    /// Waiting for approval (the `pending_approval` fault): not released yet.
    Pending,
    Active,
    CheckedIn,
    Expired,
    /// Replaced by a `renew`.
    Cancelled,
}

impl RequestStatus {
    /// Pending or released, and not yet checked in, expired or cancelled.
    pub(crate) fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Active)
    }

    pub(crate) fn api_name(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Active => "Active",
            Self::CheckedIn => "Checked In",
            Self::Expired => "Expired",
            Self::Cancelled => "Cancelled",
        }
    }
}

pub(crate) struct RequestRec {
    pub id: u64,
    pub owner: String,
    pub account: usize,
    pub access_type: String,
    pub application_id: Option<i64>,
    pub reason: String,
    pub released: SystemTime,
    pub duration: Duration,
    pub expires: Instant,
    pub expires_wall: SystemTime,
    pub status: RequestStatus,
    pub rotate_on_checkin: bool,
}

/// The first request id.
pub(crate) const FIRST_REQUEST_ID: u64 = 101;

/// Every request ever made (ids are sequential, so an id is an index), plus the indices of the
/// open ones so that hot operations do not scan closed requests.
#[derive(Default)]
pub(crate) struct Requests {
    pub next_id: u64,
    pub list: Vec<RequestRec>,
    pub open: Vec<usize>,
    /// New requests wait for approval (fault knob).
    pub pending_approval: bool,
}

impl Requests {
    pub(crate) fn index_of(&self, id: u64) -> Option<usize> {
        let i = usize::try_from(id.checked_sub(FIRST_REQUEST_ID)?).ok()?;
        (i < self.list.len()).then_some(i)
    }

    /// Drops closed requests from the open index.
    pub(crate) fn prune(&mut self) {
        let list = &self.list;
        self.open.retain(|i| list[*i].status.is_open());
    }
}

#[derive(Default)]
pub(crate) struct RouteFault {
    pub fail_count: AtomicU32,
    pub fail_status: AtomicU16,
    pub drop_count: AtomicU32,
    pub truncate_count: AtomicU32,
}

/// What a fault check decided for one call.
pub(crate) enum Injected {
    None,
    Fail(u16),
    Drop,
    /// Answer with the real status and headers, then close the connection halfway through the
    /// body.
    Truncate,
}

pub(crate) struct Faults {
    pub latency_ms: AtomicU64,
    pub routes: [RouteFault; ROUTE_COUNT],
    /// The next N Credentials calls find their request checked in just before them, as when
    /// another client of the same user (sharing it through `ConflictOption: reuse`) closed it.
    pub checkin_before_read: AtomicU32,
}

impl Faults {
    pub(crate) fn take(&self, route: Route) -> Injected {
        let f = &self.routes[route as usize];
        let dec = |c: &AtomicU32| {
            c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        };
        if f.drop_count.load(Ordering::Acquire) > 0 && dec(&f.drop_count) {
            return Injected::Drop;
        }
        if f.fail_count.load(Ordering::Acquire) > 0 && dec(&f.fail_count) {
            return Injected::Fail(f.fail_status.load(Ordering::Acquire));
        }
        if f.truncate_count.load(Ordering::Acquire) > 0 && dec(&f.truncate_count) {
            return Injected::Truncate;
        }
        Injected::None
    }

    /// Whether this Credentials call should find its request checked in (consumes one).
    pub(crate) fn take_checkin_before_read(&self) -> bool {
        self.checkin_before_read.load(Ordering::Acquire) > 0
            && self
                .checkin_before_read
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
    }

    pub(crate) fn reset(&self) {
        self.latency_ms.store(0, Ordering::Release);
        self.checkin_before_read.store(0, Ordering::Release);
        for f in &self.routes {
            f.fail_count.store(0, Ordering::Release);
            f.drop_count.store(0, Ordering::Release);
            f.truncate_count.store(0, Ordering::Release);
        }
    }
}

/// The whole state shared by every connection.
pub(crate) struct Shared {
    pub catalog: Catalog,
    pub secrets: RwLock<Vec<SecretDyn>>,
    pub accounts: Mutex<Vec<AccountDyn>>,
    pub sessions: RwLock<HashMap<String, Arc<Session>>>,
    pub tokens: Mutex<HashMap<String, Token>>,
    pub requests: Mutex<Requests>,
    pub faults: Faults,
    /// Appliance-like limits and the load counters.
    pub limits: Limits,
    pub calls: [AtomicU64; ROUTE_COUNT],
    pub session_idle: Duration,
    pub require_client_cert: bool,
    pub folder_path_separator: String,
    pub started: Instant,
    /// When expired sessions and tokens were last swept (ms since start).
    pub last_sweep_ms: AtomicU64,
    pub traffic: Traffic,
    /// Whether minted secrets carry a canary ([`Options::canaries`](crate::Options::canaries)).
    pub canaries: bool,
}

impl Shared {
    /// The start of a secret this emulator mints: `PSCANARY-<kind>-` when canaries are on
    /// (the kinds are listed in crates/testkit/canaries.txt), else nothing.
    pub(crate) fn canary(&self, kind: &str) -> String {
        if self.canaries {
            format!("{}-{kind}-", crate::CANARY_MARKER)
        } else {
            String::new()
        }
    }
}

/// Poisoning only follows a panic in another handler; the data is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lookup key of a folder path: lower-cased segments joined with U+0000.
pub(crate) fn path_key<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    let mut key = String::new();
    for (i, s) in segments.enumerate() {
        if i > 0 {
            key.push('\0');
        }
        for ch in s.chars() {
            key.extend(ch.to_lowercase());
        }
    }
    key
}

impl Shared {
    pub(crate) fn new(seed: &Seed, opts: &Options) -> Shared {
        let raw = &seed.raw;
        let created_at = SystemTime::now();
        let created = iso_utc(created_at);

        let mut group_ids: HashMap<String, u32> = HashMap::new();
        let mut groups: Vec<String> = Vec::new();
        let mut intern = |g: &str| -> u32 {
            if let Some(id) = group_ids.get(g) {
                return *id;
            }
            let id = u32::try_from(groups.len()).unwrap_or(u32::MAX);
            groups.push(g.to_string());
            group_ids.insert(g.to_string(), id);
            id
        };

        let mut next_user_id = 1001u32;
        let mut users = HashMap::new();
        for u in &raw.users {
            let principal = Arc::new(Principal {
                user_id: next_user_id,
                name: u.name.clone(),
                owner: u.name.to_lowercase(),
                groups: u.groups.iter().map(|g| intern(g)).collect(),
            });
            next_user_id += 1;
            users.insert(
                u.name.to_lowercase(),
                UserRec {
                    password: u.password.clone(),
                    principal,
                },
            );
        }
        let api_keys = raw
            .api_keys
            .iter()
            .map(|k| (k.key.clone(), k.users.iter().map(|u| u.to_lowercase()).collect()))
            .collect();
        let mut oauth = HashMap::new();
        for o in &raw.oauth_clients {
            let principal = Arc::new(Principal {
                user_id: next_user_id,
                name: o.user.clone(),
                owner: o.user.to_lowercase(),
                groups: o.groups.iter().map(|g| intern(g)).collect(),
            });
            next_user_id += 1;
            oauth.insert(
                o.client_id.to_lowercase(),
                OauthRec {
                    client_secret: o.client_secret.clone(),
                    ttl: Duration::from_secs(o.token_ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL_SECONDS)),
                    principal,
                },
            );
        }

        let mut b = TreeBuilder::default();
        for (i, s) in raw.safes.iter().enumerate() {
            let folder = b.add_folder(s, None, i, &[]);
            let readers = s.readers.iter().flatten().map(|g| intern(g)).collect();
            b.safes.push(SafeRec { folder, readers });
        }

        let mut accounts = Vec::new();
        let mut account_dyn = Vec::new();
        let mut account_by_names = HashMap::new();
        let mut systems: HashMap<String, u32> = HashMap::new();
        for (i, a) in raw.managed_accounts.iter().enumerate() {
            let next_system = u32::try_from(systems.len()).unwrap_or(0) + 1;
            let system_id = *systems.entry(a.system.to_lowercase()).or_insert(next_system);
            accounts.push(AccountMeta {
                system_id,
                account_id: u32::try_from(i).unwrap_or(0) + 1,
                system: a.system.clone(),
                account: a.account.clone(),
                description: a.description.clone().unwrap_or_default(),
                requestors: a.requestors.iter().map(|g| intern(g)).collect(),
                rotate_on_checkin: a.rotate_on_checkin,
                preferred_node: guid_from("node:local"),
            });
            account_dyn.push(AccountDyn {
                password: a.password.clone(),
                last_change: created.clone(),
            });
            account_by_names.insert((a.system.to_lowercase(), a.account.to_lowercase()), i);
        }

        let mut catalog = Catalog {
            users,
            api_keys,
            oauth,
            groups,
            safes: b.safes,
            folders: b.folders,
            folder_by_path: b.folder_by_path,
            folder_by_id: HashMap::new(),
            secrets: b.secrets,
            secret_by_id: HashMap::new(),
            secret_by_title: HashMap::new(),
            accounts,
            account_by_names,
            created,
        };
        catalog.folder_by_id = catalog
            .folders
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), i))
            .collect();
        catalog.secret_by_id = catalog
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        catalog.secret_by_title = catalog
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.folder, s.title.to_lowercase()), i))
            .collect();

        let sep = opts.folder_path_separator.clone();
        let secrets = b
            .values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let modified = catalog.created.clone();
                let (json, json_no_password) = secret_json(&catalog, &sep, i, &value, &modified);
                SecretDyn {
                    value,
                    modified,
                    json,
                    json_no_password,
                }
            })
            .collect();

        Shared {
            catalog,
            secrets: RwLock::new(secrets),
            accounts: Mutex::new(account_dyn),
            sessions: RwLock::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            requests: Mutex::new(Requests {
                next_id: FIRST_REQUEST_ID,
                ..Requests::default()
            }),
            faults: Faults {
                latency_ms: AtomicU64::new(0),
                routes: Default::default(),
                checkin_before_read: AtomicU32::new(0),
            },
            limits: Limits::new(opts.limits),
            calls: Default::default(),
            session_idle: opts.session_idle,
            require_client_cert: opts.client_ca_pem.is_some(),
            folder_path_separator: sep,
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
            traffic: Traffic::default(),
            canaries: opts.canaries,
        }
    }

    /// True at most once a second: whether a caller should sweep expired sessions and tokens.
    /// Keeps sign-in O(1) on average even when clients never sign out.
    pub(crate) fn sweep_due(&self) -> bool {
        let now = self.now_ms();
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The display path of a folder, joined with the configured separator.
    pub(crate) fn folder_path(&self, folder: usize) -> String {
        self.catalog.folders[folder]
            .segments
            .join(&self.folder_path_separator)
    }

    /// Changes a secret's value and rebuilds its cached JSON.
    pub(crate) fn set_secret_value(&self, idx: usize, value: String) {
        let modified = iso_utc(SystemTime::now());
        let (json, json_no_password) =
            secret_json(&self.catalog, &self.folder_path_separator, idx, &value, &modified);
        let mut secrets = write(&self.secrets);
        secrets[idx] = SecretDyn {
            value,
            modified,
            json,
            json_no_password,
        };
    }

    /// Sessions not idle for longer than the idle limit.
    pub(crate) fn sessions_open(&self) -> usize {
        let now = self.now_ms();
        let idle = u64::try_from(self.session_idle.as_millis()).unwrap_or(u64::MAX);
        read(&self.sessions)
            .values()
            .filter(|s| now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) <= idle)
            .count()
    }
}

#[derive(Default)]
struct TreeBuilder {
    safes: Vec<SafeRec>,
    folders: Vec<FolderRec>,
    folder_by_path: HashMap<String, usize>,
    secrets: Vec<SecretMeta>,
    values: Vec<String>,
}

impl TreeBuilder {
    fn add_folder(
        &mut self,
        raw: &RawFolder,
        parent: Option<usize>,
        safe: usize,
        parents: &[String],
    ) -> usize {
        let mut segments = parents.to_vec();
        segments.push(raw.name.clone());
        let idx = self.folders.len();
        let id = guid_from(&format!(
            "folder:{}",
            path_key(segments.iter().map(String::as_str))
        ));
        self.folder_by_path
            .insert(path_key(segments.iter().map(String::as_str)), idx);
        self.folders.push(FolderRec {
            id,
            name: raw.name.clone(),
            description: raw.description.clone().unwrap_or_default(),
            parent,
            safe,
            segments: segments.clone(),
            secrets: Vec::new(),
        });
        for s in &raw.secrets {
            let si = self.add_secret(s, idx, safe, &segments);
            self.folders[idx].secrets.push(si);
        }
        for sub in &raw.folders {
            self.add_folder(sub, Some(idx), safe, &segments);
        }
        idx
    }

    fn add_secret(&mut self, s: &RawSecret, folder: usize, safe: usize, segments: &[String]) -> usize {
        // Validation guarantees a known type and the fields it needs.
        let kind = SecretKind::parse(&s.kind).unwrap_or(SecretKind::Text);
        let value = match kind {
            SecretKind::Credential => s.password.clone(),
            SecretKind::Text => s.text.clone(),
            SecretKind::File => s.content.clone(),
        }
        .unwrap_or_default();
        let key = format!(
            "{}\0\0{}",
            path_key(segments.iter().map(String::as_str)),
            s.title.to_lowercase()
        );
        self.secrets.push(SecretMeta {
            id: guid_from(&format!("secret:{key}")),
            title: s.title.clone(),
            kind,
            folder,
            safe,
            username: match kind {
                SecretKind::Credential => Some(s.username.clone().unwrap_or_default()),
                _ => None,
            },
            description: s.description.clone().unwrap_or_default(),
            notes: s.notes.clone().unwrap_or_default(),
            file_name: s.file_name.clone(),
        });
        self.values.push(value);
        self.secrets.len() - 1
    }
}

const OWNER_ID: u32 = 1;
const OWNER_NAME: &str = "emulator-admin";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OwnerJson<'a> {
    owner_id: u32,
    group_id: Option<u32>,
    user_id: u32,
    owner: &'a str,
    name: &'a str,
    email: &'a str,
}

/// The secret object as the v3.1 list response shows it (the real field set, in its order).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SecretJson<'a> {
    id: &'a str,
    title: &'a str,
    description: &'a str,
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<Option<&'a str>>,
    secret_type: &'a str,
    file_name: Option<&'a str>,
    file_hash: Option<String>,
    text: Option<&'a str>,
    notes: &'a str,
    owner_id: u32,
    group_id: Option<u32>,
    owner: &'a str,
    owner_type: &'a str,
    owners: [OwnerJson<'a>; 1],
    group: Option<&'a str>,
    folder_id: &'a str,
    folder: &'a str,
    folder_path: &'a str,
    created_on: &'a str,
    created_by: &'a str,
    modified_on: &'a str,
    modified_by: &'a str,
    urls: [(); 0],
}

fn secret_json(catalog: &Catalog, sep: &str, idx: usize, value: &str, modified: &str) -> (Bytes, Bytes) {
    let m = &catalog.secrets[idx];
    let folder = &catalog.folders[m.folder];
    let folder_path = folder.segments.join(sep);
    let readers = &catalog.safes[m.safe].readers;
    let group = readers.first().map(|g| catalog.groups[*g as usize].as_str());
    let group_id = readers.first().map(|g| g + 1);
    let file_hash = (m.kind == SecretKind::File)
        .then(|| hex(ring::digest::digest(&ring::digest::SHA256, value.as_bytes()).as_ref()).to_uppercase());
    let password = match m.kind {
        SecretKind::File => None,
        _ => Some(value),
    };
    let mut obj = SecretJson {
        id: &m.id,
        title: &m.title,
        description: &m.description,
        username: m.username.as_deref(),
        password: Some(password),
        secret_type: m.kind.api_name(),
        file_name: m.file_name.as_deref(),
        file_hash,
        text: None,
        notes: &m.notes,
        owner_id: OWNER_ID,
        group_id,
        owner: OWNER_NAME,
        owner_type: "User",
        owners: [OwnerJson {
            owner_id: OWNER_ID,
            group_id,
            user_id: OWNER_ID,
            owner: OWNER_NAME,
            name: OWNER_NAME,
            email: "emulator-admin@example.invalid",
        }],
        group,
        folder_id: &folder.id,
        folder: &folder.name,
        folder_path: &folder_path,
        created_on: &catalog.created,
        created_by: OWNER_NAME,
        modified_on: modified,
        modified_by: OWNER_NAME,
        urls: [],
    };
    let with = Bytes::from(serde_json::to_vec(&obj).unwrap_or_default());
    obj.password = None;
    let without = Bytes::from(serde_json::to_vec(&obj).unwrap_or_default());
    (with, without)
}
