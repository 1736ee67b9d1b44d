//! The client, the session, and the HTTP plumbing (retries, re-authentication, logging).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Method, header};
use secrecy::{ExposeSecret, SecretString, zeroize::Zeroize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{
    config::{Auth, ClientConfig, Resolver},
    error::{Error, chain_text, summarize_body},
    path::{AccountRef, FolderPath, SecretPath},
    retry::{Backoff, Class, classify_status, classify_transport, parse_retry_after},
    secret::{
        ManagedCredential, RawSecret, Secret, SecretKind, SecretValue, SignedInUser, decode_credentials,
        decode_managed_account, decode_request_id, decode_secret_list,
    },
};

/// Route keys (as in the emulator contract): lower-case method and path template. Used in logs
/// and errors; ids never appear in them.
mod route {
    pub const TOKEN: &str = "POST auth/connect/token";
    pub const SIGN_IN: &str = "POST auth/signappin";
    pub const SIGN_OUT: &str = "POST auth/signout";
    pub const SECRETS: &str = "GET secrets-safe/secrets";
    pub const FILE: &str = "GET secrets-safe/secrets/{id}/file/download";
    pub const ACCOUNTS: &str = "GET managedaccounts";
    pub const REQUESTS: &str = "POST requests";
    pub const CREDENTIALS: &str = "GET credentials/{id}";
    pub const CHECKIN: &str = "PUT requests/{id}/checkin";
}

/// Largest body accepted from routes other than the file download.
const MAX_API_BODY: u64 = 32 * 1024 * 1024;
/// Retry budget of sign-out and of the check-ins done at sign-out, whatever the configured one
/// (when Password Safe throttles them, the larger of the two: it is up, and asks for patience).
const CLOSE_BUDGET: Duration = Duration::from_secs(10);

/// A configured Password Safe client. Cheap to clone. Sign in with [`Client::sign_in`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    base: String,
    cfg: ClientConfig,
    tls: rustls::ClientConfig,
    /// Shared by every session, so its cache serves them all.
    resolver: Option<Arc<crate::resolve::HickoryResolver>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.shared.base)
            .field("auth", &self.shared.cfg.auth)
            .finish()
    }
}

impl Client {
    /// Validates the configuration and prepares TLS (reads the system roots in
    /// [`crate::CaMode::Add`]). No network traffic.
    pub fn new(cfg: ClientConfig) -> Result<Client, Error> {
        let base = validate_base_url(&cfg.base_url)?;
        cfg.auth.validate()?;
        let r = &cfg.request;
        if !(1..=525_600).contains(&r.duration_minutes) {
            return Err(Error::invalid_input(
                "request duration",
                "DurationMinutes must be 1–525600",
            ));
        }
        if r.reason.chars().count() > 1000 {
            return Err(Error::invalid_input(
                "request reason",
                "Reason must be at most 1000 characters",
            ));
        }
        if cfg.request_timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return Err(Error::invalid_input(
                "timeouts",
                "connect and request timeouts must be positive",
            ));
        }
        let tls = crate::tls::client_config(&cfg.tls)?;
        let resolver = (cfg.resolver == Resolver::Builtin).then(Arc::default);
        Ok(Client {
            shared: Arc::new(Shared {
                base,
                cfg,
                tls,
                resolver,
            }),
        })
    }

    /// The validated base URL (without trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.shared.base
    }

    /// Signs in (OAuth: token, then `SignAppIn` with the bearer token; API key: `SignAppIn` with
    /// `PS-Auth`) and returns the session. Each session has its own cookie jar.
    pub async fn sign_in(&self) -> Result<Session, Error> {
        let transport = Transport::new(self.shared.clone())?;
        let started = Instant::now();
        let user = sign_in(&transport, "sign-in").await?;
        tracing::debug!(
            user = user.user_name.as_deref().unwrap_or(""),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "signed in to Password Safe"
        );
        Ok(Session {
            inner: Arc::new(SessionInner {
                transport,
                user,
                epoch: AtomicU64::new(0),
                reauth_attempts: AtomicU64::new(0),
                reauth: tokio::sync::Mutex::new(ReauthState {
                    epoch: 0,
                    attempts: 0,
                    last_refusal: None,
                }),
                signed_out: AtomicBool::new(false),
                open_requests: Mutex::new(BTreeSet::new()),
                account_locks: Mutex::new(HashMap::new()),
            }),
        })
    }
}

fn validate_base_url(raw: &str) -> Result<String, Error> {
    const WHAT: &str = "base URL";
    let trimmed = raw.trim().trim_end_matches('/');
    let url =
        reqwest::Url::parse(trimmed).map_err(|e| Error::invalid_input(WHAT, format!("not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(Error::invalid_input(WHAT, "must use https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid_input(WHAT, "has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::invalid_input(WHAT, "must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid_input(WHAT, "must not contain credentials"));
    }
    Ok(trimmed.to_owned())
}

/// A signed-in session. Clone it freely (an `Arc` inside): every method takes `&self`, so many
/// calls can run concurrently over the one session (bounded by
/// [`ClientConfig::max_concurrent_requests`]).
///
/// Always finish with [`Session::sign_out`], on error paths too. As a safety net, dropping the
/// last clone without signing out logs a warning and, inside a Tokio runtime, spawns a
/// best-effort check-in of open requests and sign-out (which does not run if the runtime shuts
/// down first).
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.inner.user.user_name)
            .field("signed_out", &self.inner.signed_out.load(Ordering::Relaxed))
            .finish()
    }
}

struct SessionInner {
    transport: Transport,
    user: SignedInUser,
    /// Bumped after each successful re-authentication.
    epoch: AtomicU64,
    /// Mirrors `ReauthState::attempts` for lock-free reads.
    reauth_attempts: AtomicU64,
    reauth: tokio::sync::Mutex<ReauthState>,
    signed_out: AtomicBool,
    /// Managed-account requests not yet checked in.
    open_requests: Mutex<BTreeSet<u64>>,
    /// One release at a time per account: with `ConflictOption: reuse`, concurrent requests for
    /// the same account share one request ID, and the first check-in would close it under the
    /// others.
    account_locks: Mutex<AccountLocks>,
}

/// Per-account (system, account; lower case) release locks.
type AccountLocks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

struct ReauthState {
    /// Successful re-authentications.
    epoch: u64,
    /// Re-authentication attempts, successful or not.
    attempts: u64,
    /// How the last failed attempt was refused (status, detail), shared with the calls that
    /// waited for it.
    last_refusal: Option<(Option<u16>, Option<String>)>,
}

impl SessionInner {
    fn open_request_ids(&self) -> Vec<u64> {
        self.open_requests
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if self.signed_out.load(Ordering::SeqCst) {
            return;
        }
        let open = self.open_request_ids();
        tracing::warn!(
            open_requests = open.len(),
            "Password Safe session dropped without sign_out; closing it in the background"
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let transport = self.transport.clone();
            handle.spawn(async move {
                for id in open {
                    let _ = checkin(&transport, id, "background check-in", CLOSE_BUDGET).await;
                }
                let _ = sign_out_call(&transport).await;
            });
        }
    }
}

fn credential(acct: &AccountRef, password: Result<SecretValue, Error>) -> Result<ManagedCredential, Error> {
    Ok(ManagedCredential {
        system: acct.system().to_owned(),
        account: acct.account().to_owned(),
        password: password?,
    })
}

impl Session {
    /// The user the session runs as.
    pub fn user(&self) -> &SignedInUser {
        &self.inner.user
    }

    /// Reads one Secrets Safe secret by folder path and title. File secrets are downloaded.
    /// An empty result is [`Error::NotFound`] naming the path.
    pub async fn secret(&self, path: &SecretPath) -> Result<Secret, Error> {
        let what = format!("secret {:?}", path.to_string());
        let mut query = vec![
            ("path", path.folder().to_owned()),
            ("separator", path.separator().to_string()),
            ("title", path.title().to_owned()),
        ];
        self.add_version(&mut query);
        let mut reply = self
            .call(Call::get(route::SECRETS, "secrets-safe/secrets", &what).query(query))
            .await?;
        let decoded = decode_secret_list(&reply);
        reply.zeroize();
        let (list, _) = decoded.map_err(|reason| invalid(&what, route::SECRETS, reason))?;
        let chosen = pick_by_title(list, path.title()).ok_or_else(|| Error::NotFound {
            what: what.clone(),
            route: route::SECRETS,
            reason: "empty result".to_owned(),
            detail: None,
        })?;
        self.resolve(chosen, &what).await
    }

    /// Reads every secret of a folder (no title). File secrets are downloaded concurrently.
    /// An empty folder is [`Error::NotFound`] (the API cannot tell it from a missing one).
    /// With API version 3.2, further pages are fetched while `TotalCount` says more exist.
    pub async fn folder(&self, path: &FolderPath) -> Result<Vec<Secret>, Error> {
        let what = format!("folder {:?}", path.to_string());
        let mut raws: Vec<RawSecret> = Vec::new();
        loop {
            let mut query = vec![
                ("path", path.as_str().to_owned()),
                ("separator", path.separator().to_string()),
            ];
            if !raws.is_empty() {
                query.push(("offset", raws.len().to_string()));
            }
            self.add_version(&mut query);
            let mut reply = self
                .call(Call::get(route::SECRETS, "secrets-safe/secrets", &what).query(query))
                .await?;
            let decoded = decode_secret_list(&reply);
            reply.zeroize();
            let (page, total) = decoded.map_err(|reason| invalid(&what, route::SECRETS, reason))?;
            let before = raws.len();
            for s in page {
                // A server that ignores `offset` would repeat itself: keep each Id once.
                if !raws.iter().any(|r| r.id == s.id) {
                    raws.push(s);
                }
            }
            match total {
                Some(total) if raws.len() > before && (raws.len() as u64) < total => continue,
                _ => break,
            }
        }
        if raws.is_empty() {
            return Err(Error::NotFound {
                what,
                route: route::SECRETS,
                reason: "empty result".to_owned(),
                detail: None,
            });
        }
        let mut tasks = Vec::with_capacity(raws.len());
        for raw in raws {
            let session = self.clone();
            let what = format!("secret {:?} in {what}", raw.title);
            tasks.push(tokio::spawn(async move { session.resolve(raw, &what).await }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        let mut first_err = None;
        for t in tasks {
            match t.await {
                Ok(Ok(s)) => out.push(s),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(join) => {
                    first_err.get_or_insert(Error::InvalidResponse {
                        what: what.clone(),
                        route: route::FILE,
                        reason: format!("download task failed: {join}"),
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Releases a managed account's password: `GET ManagedAccounts` → `POST Requests`
    /// (`ConflictOption: reuse`) → `GET Credentials/{id}` → `PUT Requests/{id}/checkin`.
    ///
    /// `reuse` hands every client of the same user one shared request (all the replicas of a
    /// Deployment): Password Safe answers 201 to the client that created it and 200 to the
    /// others. So:
    /// - only the client that created a request (201) checks it in, whether or not its
    ///   credentials call succeeded; a client that reused another's (200) leaves it to its
    ///   creator, since checking it in would close it under the clients still reading through it;
    /// - a `Credentials` answer 403 or 404 may mean the creator checked the request in between
    ///   our `POST` and our read. The request is made again (after a jittered backoff, within the
    ///   retry budget): a different request ID proves the first one was closed, so the read is
    ///   tried again; the same ID means the request is still open and the refusal is real
    ///   (pending approval, no permission), which is returned at once. When the budget runs out
    ///   while requests keep closing under us, the error is [`Error::SharedRequestClosed`].
    ///
    /// If the check-in itself fails (after retries) the password is still returned, a warning is
    /// logged, and [`Session::sign_out`] tries the check-in again. A check-in answered 403 or 404
    /// means the request is already closed. Concurrent calls for the same account on one session
    /// run one after the other.
    pub async fn managed_account(&self, acct: &AccountRef) -> Result<ManagedCredential, Error> {
        let (password, created) = self.release(acct).await;
        self.check_in(&created, &acct.to_string()).await;
        credential(acct, password)
    }

    /// [`Session::managed_account`] without the check-in when the password was read: the
    /// request stays open (and tracked) until [`Session::check_in_open_requests`] or
    /// [`Session::sign_out`]. The caller can write the password first, which takes the check-in's
    /// round trip off the path to the files. A release that fails is checked in at once.
    pub async fn managed_account_open(&self, acct: &AccountRef) -> Result<ManagedCredential, Error> {
        let (password, created) = self.release(acct).await;
        if password.is_err() {
            self.check_in(&created, &acct.to_string()).await;
        }
        credential(acct, password)
    }

    /// Checks in every request this session still holds open (those left by
    /// [`Session::managed_account_open`], and failed check-ins), each with the usual retries. A
    /// failure is logged and returned; [`Session::sign_out`] tries again.
    pub async fn check_in_open_requests(&self) -> Result<(), Error> {
        let open = self.inner.open_request_ids();
        let mut first_err = None;
        for id in open {
            match checkin_with(self, id, "open request").await {
                Ok(()) => self.track_request(id, false),
                Err(e) => {
                    tracing::warn!(error = %e, "check-in failed; it will be retried at sign-out");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// `GET ManagedAccounts`: the system and account IDs.
    async fn account_ids(
        &self,
        acct: &AccountRef,
        what: &str,
        query: Vec<(&'static str, String)>,
    ) -> Result<(i64, i64), Error> {
        let reply = self
            .call(Call::get(route::ACCOUNTS, "ManagedAccounts", what).query(query))
            .await?;
        decode_managed_account(&reply, acct.system(), acct.account())
            .map_err(|reason| invalid(what, route::ACCOUNTS, reason))?
            .ok_or_else(|| Error::NotFound {
                what: what.to_owned(),
                route: route::ACCOUNTS,
                reason: "no matching account in the result".to_owned(),
                detail: None,
            })
    }

    async fn check_in(&self, created: &[u64], what: &str) {
        for &request_id in created {
            match checkin_with(self, request_id, what).await {
                Ok(()) => self.track_request(request_id, false),
                Err(e) => tracing::warn!(error = %e, "check-in failed; it will be retried at sign-out"),
            }
        }
    }

    /// `GET ManagedAccounts` → `POST Requests` → `GET Credentials/{id}`: the password (or why
    /// not) and the requests this call created, which are tracked as open.
    async fn release(&self, acct: &AccountRef) -> (Result<SecretValue, Error>, Vec<u64>) {
        let key = (acct.system().to_lowercase(), acct.account().to_lowercase());
        let lock = match self.inner.account_locks.lock() {
            Ok(mut locks) => locks.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let _serialized = lock.lock().await;
        let what = format!("managed account {:?}", acct.to_string());
        let query = vec![
            ("systemName", acct.system().to_owned()),
            ("accountName", acct.account().to_owned()),
        ];
        let (system_id, account_id) = match self.account_ids(acct, &what, query).await {
            Ok(ids) => ids,
            Err(e) => return (Err(e), Vec::new()),
        };

        let opts = &self.inner.transport.shared.cfg.request;
        let mut body = json!({
            "SystemID": system_id,
            "AccountID": account_id,
            "DurationMinutes": opts.duration_minutes,
            "Reason": opts.reason,
            "ConflictOption": "reuse",
        });
        if let Some(rotate) = opts.rotate_on_checkin {
            body["RotateOnCheckin"] = Value::Bool(rotate);
        }
        let mut backoff = Backoff::new(self.inner.transport.shared.cfg.retry.clone());
        let started = Instant::now();
        // Requests this call created: it checks them in, whatever happens.
        let mut created: Vec<u64> = Vec::new();
        // The last request whose credentials were refused, and the refusal.
        let mut refused: Option<(u64, Error)> = None;
        let mut closed_under_us: u32 = 0;
        let password = loop {
            let call = Call::new(Method::POST, route::REQUESTS, "Requests".to_owned(), &what)
                .json(&body)
                .conflict_retryable();
            let (status, reply) = match self.call_status(call).await {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            let request_id = match decode_request_id(&reply) {
                Ok(id) => id,
                Err(reason) => break Err(invalid(&what, route::REQUESTS, reason)),
            };
            // 201: a new request, ours. 200: an existing one reused; ours only if this session
            // opened it earlier and could not check it in yet.
            if (status == 201 || self.is_open_request(request_id)) && !created.contains(&request_id) {
                created.push(request_id);
                self.track_request(request_id, true);
            }
            if let Some((previous, refusal)) = refused.take() {
                if previous == request_id {
                    // Still open, yet refused: not a check-in by another client but a real
                    // refusal (pending approval, no permission).
                    break Err(refusal);
                }
                closed_under_us += 1;
            }
            let cred_call = Call::new(
                Method::GET,
                route::CREDENTIALS,
                format!("Credentials/{request_id}"),
                &what,
            )
            .sensitive();
            match self.call(cred_call).await {
                Ok(mut body) => {
                    let decoded = decode_credentials(&body);
                    body.zeroize();
                    break decoded.map_err(|reason| invalid(&what, route::CREDENTIALS, reason));
                }
                Err(e @ (Error::Permission { .. } | Error::NotFound { .. })) => {
                    match backoff.next_delay(started.elapsed(), None) {
                        Some(delay) => {
                            tracing::debug!(
                                delay_ms = delay.as_millis() as u64,
                                "credentials refused; requesting again (the shared request may have been checked in by another client)"
                            );
                            refused = Some((request_id, e));
                            tokio::time::sleep(delay).await;
                        }
                        None if closed_under_us > 0 => {
                            break Err(Error::SharedRequestClosed {
                                what: what.clone(),
                                attempts: closed_under_us + 1,
                            });
                        }
                        None => break Err(e),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        (password, created)
    }

    /// Checks in any request still open, then signs out (`POST Auth/Signout`). Idempotent: later
    /// calls (and calls on other clones) do nothing and return `Ok`. A 401 (session already
    /// expired) counts as signed out. Retries are limited to 10 s here. Returns the first error.
    /// Call it once the session's other calls have finished: calls still in flight fail with
    /// [`Error::SignedOut`] (and a managed-account request they opened may stay open until it
    /// expires).
    pub async fn sign_out(self) -> Result<(), Error> {
        let inner = &self.inner;
        if inner.signed_out.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Wait for a re-authentication in progress, so the sign-out closes the newest session.
        let _no_reauth = inner.reauth.lock().await;
        let open = inner.open_request_ids();
        let mut first_err = None;
        for id in open {
            match checkin(&inner.transport, id, "check-in at sign-out", CLOSE_BUDGET).await {
                Ok(()) => self.track_request(id, false),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Err(e) = sign_out_call(&inner.transport).await {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn add_version(&self, query: &mut Vec<(&'static str, String)>) {
        if let Some(v) = self.inner.transport.shared.cfg.api_version {
            query.push(("version", v.as_str().to_owned()));
        }
    }

    fn is_open_request(&self, id: u64) -> bool {
        self.inner.open_requests.lock().is_ok_and(|set| set.contains(&id))
    }

    fn track_request(&self, id: u64, open: bool) {
        if let Ok(mut set) = self.inner.open_requests.lock() {
            if open {
                set.insert(id);
            } else {
                set.remove(&id);
            }
        }
    }

    /// Turns a listed secret into a [`Secret`], downloading file content.
    async fn resolve(&self, raw: RawSecret, what: &str) -> Result<Secret, Error> {
        let value = match &raw.kind {
            SecretKind::File { .. } => {
                if !raw.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(invalid(
                        what,
                        route::SECRETS,
                        "secret Id is not a GUID".to_owned(),
                    ));
                }
                let mut query = Vec::new();
                self.add_version(&mut query);
                let path = format!("secrets-safe/secrets/{}/file/download", raw.id);
                let mut call = Call::new(Method::GET, route::FILE, path, what).query(query);
                call.max_body = self.inner.transport.shared.cfg.max_file_bytes;
                SecretValue::new(self.call(call).await?)
            }
            SecretKind::Credential { .. } | SecretKind::Text => match raw.password {
                Some(v) => v,
                None => {
                    return Err(invalid(
                        what,
                        route::SECRETS,
                        "the secret has no Password field (is decryption disabled?)".to_owned(),
                    ));
                }
            },
        };
        Ok(Secret {
            title: raw.title,
            folder_path: raw.folder_path,
            kind: raw.kind,
            value,
            id: raw.id,
            metadata: raw.metadata,
        })
    }

    /// One API call with retries, plus one re-authentication on 401.
    async fn call(&self, call: Call<'_>) -> Result<Vec<u8>, Error> {
        self.call_status(call).await.map(|(_, body)| body)
    }

    /// [`Session::call`], with the 2xx status.
    async fn call_status(&self, call: Call<'_>) -> Result<(u16, Vec<u8>), Error> {
        let inner = &self.inner;
        if inner.signed_out.load(Ordering::SeqCst) {
            return Err(Error::SignedOut {
                what: call.what.to_owned(),
            });
        }
        let epoch = inner.epoch.load(Ordering::SeqCst);
        let attempts = inner.reauth_attempts.load(Ordering::SeqCst);
        match inner.transport.execute_status(&call).await {
            Err(Error::Authentication {
                status: Some(401), ..
            }) => {
                self.reauthenticate(epoch, attempts, call.what).await?;
                inner.transport.execute_status(&call).await.map_err(|e| match e {
                    Error::Authentication {
                        what,
                        route,
                        status,
                        detail,
                    } => Error::Authentication {
                        what,
                        route,
                        status,
                        detail: Some(match detail {
                            Some(d) => format!("still refused after re-authentication: {d}"),
                            None => "still refused after re-authentication".to_owned(),
                        }),
                    },
                    other => other,
                })
            }
            other => other,
        }
    }

    /// Signs in again after a 401, once for all concurrent callers that saw the same session
    /// expire (single flight: the first caller re-authenticates, the others wait for it). Callers
    /// whose request was sent before an attempt that failed share that failure; a later call
    /// (for example the next refresh after an outage) tries again.
    async fn reauthenticate(&self, seen_epoch: u64, seen_attempts: u64, what: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let mut state = inner.reauth.lock().await;
        if inner.signed_out.load(Ordering::SeqCst) {
            // Signed out while this call was in flight: never open a new session behind it.
            return Err(Error::SignedOut {
                what: what.to_owned(),
            });
        }
        if state.epoch != seen_epoch {
            return Ok(());
        }
        if state.attempts != seen_attempts {
            let (status, detail) = state.last_refusal.clone().unwrap_or_default();
            return Err(reauthentication_refused(what, status, detail));
        }
        state.attempts += 1;
        inner.reauth_attempts.store(state.attempts, Ordering::SeqCst);
        tracing::info!("Password Safe session expired (HTTP 401); signing in again");
        // Release the old session in case the server still holds it (one attempt, result
        // ignored: normally it is already gone).
        let mut close = Call::new(
            Method::POST,
            route::SIGN_OUT,
            "Auth/Signout".to_owned(),
            "sign-out before re-authentication",
        );
        close.budget = Some(Duration::ZERO);
        let _ = inner.transport.execute(&close).await;
        match sign_in(&inner.transport, "re-authentication").await {
            Ok(_) => {
                state.epoch += 1;
                inner.epoch.store(state.epoch, Ordering::SeqCst);
                Ok(())
            }
            Err(Error::Authentication { status, detail, .. }) => {
                state.last_refusal = Some((status, detail.clone()));
                Err(reauthentication_refused(what, status, detail))
            }
            Err(e) => {
                state.last_refusal = Some((e.status(), None));
                Err(e)
            }
        }
    }
}

/// The error of a call whose session expired and could not be renewed: it names the call, and
/// says how the new sign-in was refused.
fn reauthentication_refused(what: &str, status: Option<u16>, detail: Option<String>) -> Error {
    Error::Authentication {
        what: what.to_owned(),
        route: route::SIGN_IN,
        status,
        detail: Some(match detail {
            Some(d) => format!("the session expired and signing in again was refused: {d}"),
            None => "the session expired and signing in again failed".to_owned(),
        }),
    }
}

fn invalid(what: &str, route: &'static str, reason: String) -> Error {
    Error::InvalidResponse {
        what: what.to_owned(),
        route,
        reason,
    }
}

/// The entry whose title matches exactly, else case-insensitively.
fn pick_by_title(list: Vec<RawSecret>, title: &str) -> Option<RawSecret> {
    let exact = list.iter().position(|s| s.title == title);
    let idx = exact.or_else(|| list.iter().position(|s| s.title.eq_ignore_ascii_case(title)))?;
    list.into_iter().nth(idx)
}

fn checkin_call<'a>(request_id: u64, what: &'a str) -> Call<'a> {
    Call::new(
        Method::PUT,
        route::CHECKIN,
        format!("Requests/{request_id}/checkin"),
        what,
    )
    .json(&json!({}))
}

/// A request that is gone or no longer active (403, 404: checked in by another client of the
/// same user, or expired) has nothing left to check in.
fn checkin_outcome(result: Result<Vec<u8>, Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(Error::Permission { .. } | Error::NotFound { .. }) => {
            tracing::debug!("request already closed; nothing to check in");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn checkin_with(session: &Session, request_id: u64, what: &str) -> Result<(), Error> {
    checkin_outcome(session.call(checkin_call(request_id, what)).await)
}

async fn checkin(transport: &Transport, request_id: u64, what: &str, budget: Duration) -> Result<(), Error> {
    let mut call = checkin_call(request_id, what);
    call.budget = Some(budget);
    call.patient_when_throttled = true;
    checkin_outcome(transport.execute(&call).await)
}

async fn sign_out_call(transport: &Transport) -> Result<(), Error> {
    let mut call = Call::new(
        Method::POST,
        route::SIGN_OUT,
        "Auth/Signout".to_owned(),
        "sign-out",
    );
    call.budget = Some(CLOSE_BUDGET);
    call.patient_when_throttled = true;
    match transport.execute(&call).await {
        Ok(_)
        | Err(Error::Authentication {
            status: Some(401), ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Signs in over `transport` (token first in OAuth mode).
async fn sign_in(transport: &Transport, what: &str) -> Result<SignedInUser, Error> {
    let auth_header: SecretString = match &transport.shared.cfg.auth {
        Auth::ApiKey { .. } => transport.shared.cfg.auth.ps_auth_header().unwrap_or_default(),
        Auth::OAuth {
            client_id,
            client_secret,
        } => {
            let form = vec![
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose_secret().to_owned()),
                ("grant_type", "client_credentials".to_owned()),
            ];
            let mut call = Call::new(Method::POST, route::TOKEN, "Auth/connect/token".to_owned(), what);
            call.body = Body::Form(form);
            call.auth_route = true;
            let reply = transport.execute(&call).await?;
            let token = serde_json::from_slice::<Value>(&reply)
                .ok()
                .and_then(|v| v.get("access_token").and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| {
                    invalid(
                        what,
                        route::TOKEN,
                        "no access_token in the token response".to_owned(),
                    )
                })?;
            format!("Bearer {token}").into()
        }
    };
    let mut call = Call::new(Method::POST, route::SIGN_IN, "Auth/SignAppIn".to_owned(), what);
    call.auth_route = true;
    call.authorization = Some(auth_header);
    call.body = Body::EmptyJson;
    let reply = transport.execute(&call).await?;
    Ok(serde_json::from_slice(&reply).unwrap_or_default())
}

enum Body {
    None,
    /// `Content-Type: application/json` with an empty body (SignAppIn).
    EmptyJson,
    Json(Vec<u8>),
    Form(Vec<(&'static str, String)>),
}

/// One logical API call.
struct Call<'a> {
    method: Method,
    route: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Body,
    what: &'a str,
    authorization: Option<SecretString>,
    /// Token and SignAppIn: every 4xx is an authentication failure, never re-authenticated.
    auth_route: bool,
    /// Credentials: never show the response body in errors.
    sensitive: bool,
    /// 409 is retried (POST Requests).
    conflict_retryable: bool,
    max_body: u64,
    /// Replaces the configured retry budget (closing calls get their own, so that a small
    /// budget never leaves a session or request open; zero: one attempt).
    budget: Option<Duration>,
    /// While Password Safe throttles the call (429, 503 with `Retry-After`), the budget is at
    /// least the configured one: in a storm, a sign-out must not give up before the work did.
    patient_when_throttled: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, route: &'static str, path: String, what: &'a str) -> Call<'a> {
        Call {
            method,
            route,
            path,
            query: Vec::new(),
            body: Body::None,
            what,
            authorization: None,
            auth_route: false,
            sensitive: false,
            conflict_retryable: false,
            max_body: MAX_API_BODY,
            budget: None,
            patient_when_throttled: false,
        }
    }

    fn get(route: &'static str, path: &str, what: &'a str) -> Call<'a> {
        Call::new(Method::GET, route, path.to_owned(), what)
    }

    fn query(mut self, q: Vec<(&'static str, String)>) -> Self {
        self.query = q;
        self
    }

    fn json(mut self, v: &Value) -> Self {
        self.body = Body::Json(serde_json::to_vec(v).unwrap_or_default());
        self
    }

    fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    fn conflict_retryable(mut self) -> Self {
        self.conflict_retryable = true;
        self
    }
}

/// HTTP client + configuration + concurrency limit of one session.
#[derive(Clone)]
struct Transport {
    http: reqwest::Client,
    shared: Arc<Shared>,
    limiter: Arc<Semaphore>,
    /// The latest `Retry-After` Password Safe gave this session.
    throttle: Arc<Mutex<Option<Throttle>>>,
}

/// Until when a session must not call, and the answer that said so.
#[derive(Clone, Copy, Debug)]
struct Throttle {
    until: Instant,
    status: u16,
    retry_after: Duration,
}

enum AttemptError {
    Transport(reqwest::Error),
    TooLarge,
}

impl Transport {
    fn new(shared: Arc<Shared>) -> Result<Transport, Error> {
        let cfg = &shared.cfg;
        // HTTP/2 when the server offers it in ALPN (`tls::client_config`): the pool then
        // shares sign-in's connection between every call of the session.
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(shared.tls.clone())
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .https_only(true)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ps-injector-passwordsafe/", env!("CARGO_PKG_VERSION")))
            .cookie_store(true);
        if let Some(resolver) = &shared.resolver {
            builder = builder.dns_resolver(resolver.clone());
        }
        let http = builder
            .build()
            .map_err(|e| Error::invalid_input("HTTP client", chain_text(&e.without_url())))?;
        let limiter = Arc::new(Semaphore::new(cfg.max_concurrent_requests.max(1)));
        Ok(Transport {
            http,
            shared,
            limiter,
            throttle: Arc::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.shared.base, path)
    }

    /// The session's pending wait, if Password Safe's last `Retry-After` has not passed yet.
    fn throttled_until(&self) -> Option<Throttle> {
        let t = (*self.throttle.lock().ok()?)?;
        (t.until > Instant::now()).then_some(t)
    }

    fn note_throttle(&self, status: u16, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        if let Ok(mut slot) = self.throttle.lock()
            && slot.is_none_or(|t| t.until < until)
        {
            *slot = Some(Throttle {
                until,
                status,
                retry_after,
            });
        }
    }

    /// Sends `call`, retrying retryable failures within the budget. `Ok` only for 2xx.
    async fn execute(&self, call: &Call<'_>) -> Result<Vec<u8>, Error> {
        self.execute_status(call).await.map(|(_, body)| body)
    }

    /// [`Transport::execute`], with the 2xx status.
    async fn execute_status(&self, call: &Call<'_>) -> Result<(u16, Vec<u8>), Error> {
        let mut policy = self.shared.cfg.retry.clone();
        let throttled_budget = if call.patient_when_throttled {
            policy.max_elapsed.max(call.budget.unwrap_or_default())
        } else {
            call.budget.unwrap_or(policy.max_elapsed)
        };
        if let Some(b) = call.budget {
            policy.max_elapsed = b;
        }
        let mut backoff = Backoff::new(policy);
        let start = Instant::now();
        let mut attempts: u32 = 0;
        loop {
            // Password Safe asked this session to wait (429, or 503 with Retry-After, to any of
            // its calls): no call of the session goes out before then, a first attempt neither.
            if let Some(t) = self.throttled_until() {
                let wait = t.until.saturating_duration_since(Instant::now());
                let budget = if call.patient_when_throttled {
                    throttled_budget
                } else {
                    backoff.budget()
                };
                if start.elapsed() + wait >= budget {
                    return Err(Error::Throttled {
                        what: call.what.to_owned(),
                        route: call.route,
                        status: t.status,
                        attempts,
                        retry_after: Some(t.retry_after),
                    });
                }
                tokio::time::sleep(wait).await;
            }
            attempts += 1;
            let t0 = Instant::now();
            let result = {
                let _permit = self.limiter.acquire().await.ok();
                self.attempt(call).await
            };
            let elapsed_ms = t0.elapsed().as_secs_f64() * 1000.0;
            let (class, retry_after, err) = match result {
                Ok((status, retry_after, body)) => {
                    tracing::debug!(method = %call.method, route = call.route, status, elapsed_ms, attempt = attempts, "Password Safe call");
                    if (200..300).contains(&status) {
                        return Ok((status, body));
                    }
                    let class = if call.auth_route && status != 408 && status != 429 && status < 500 {
                        Class::Fatal
                    } else {
                        classify_status(status, call.conflict_retryable)
                    };
                    let ra = if status == 429 || status == 503 {
                        retry_after
                    } else {
                        None
                    };
                    (class, ra, self.status_error(call, status, ra, &body, attempts))
                }
                Err(AttemptError::TooLarge) => {
                    return Err(invalid(
                        call.what,
                        call.route,
                        format!("response larger than the limit of {} bytes", call.max_body),
                    ));
                }
                Err(AttemptError::Transport(e)) => {
                    let e = e.without_url();
                    let detail = chain_text(&e);
                    tracing::debug!(method = %call.method, route = call.route, error = %detail, elapsed_ms, attempt = attempts, "Password Safe call failed");
                    let class = classify_transport(&e);
                    let err = Error::Network {
                        what: call.what.to_owned(),
                        route: call.route,
                        attempts,
                        detail,
                        source: e,
                    };
                    (class, None, err)
                }
            };
            let budget = match &err {
                Error::Throttled {
                    status,
                    retry_after: Some(ra),
                    ..
                } => {
                    self.note_throttle(*status, *ra);
                    throttled_budget
                }
                Error::Throttled { .. } => throttled_budget,
                _ => backoff.budget(),
            };
            if class == Class::Retry
                && let Some(delay) = backoff.next_delay_within(start.elapsed(), retry_after, budget)
            {
                tracing::debug!(
                    route = call.route,
                    delay_ms = delay.as_millis() as u64,
                    "retrying"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(err);
        }
    }

    /// One HTTP exchange: status, `Retry-After`, body.
    async fn attempt(&self, call: &Call<'_>) -> Result<(u16, Option<Duration>, Vec<u8>), AttemptError> {
        let mut req = self.http.request(call.method.clone(), self.url(&call.path));
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        if let Some(auth) = &call.authorization {
            // Bytes, not str: a non-ASCII runas user (`domäne\user`) is sent as UTF-8.
            // Control characters were rejected by `Auth::validate`.
            let mut value = header::HeaderValue::from_bytes(auth.expose_secret().as_bytes())
                .unwrap_or_else(|_| header::HeaderValue::from_static("invalid"));
            value.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, value);
        }
        req = match &call.body {
            Body::None => req,
            Body::EmptyJson => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Vec::new()),
            Body::Json(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(b.clone()),
            Body::Form(f) => req.form(f),
        };
        let mut resp = req.send().await.map_err(AttemptError::Transport)?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(
            resp.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        if resp.content_length().is_some_and(|l| l > call.max_body) {
            return Err(AttemptError::TooLarge);
        }
        let cap = resp.content_length().unwrap_or(0).min(call.max_body) as usize;
        let mut body = Vec::with_capacity(cap);
        while let Some(chunk) = resp.chunk().await.map_err(AttemptError::Transport)? {
            if (body.len() + chunk.len()) as u64 > call.max_body {
                return Err(AttemptError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, retry_after, body))
    }

    /// Maps a non-2xx answer to an error. Bodies are shown only where they cannot hold a value.
    fn status_error(
        &self,
        call: &Call<'_>,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
        attempts: u32,
    ) -> Error {
        let what = call.what.to_owned();
        let route = call.route;
        let detail = if call.sensitive {
            None
        } else {
            summarize_body(body)
        };
        match status {
            401 => Error::Authentication {
                what,
                route,
                status: Some(status),
                detail,
            },
            400..=499 if call.auth_route && status != 408 && status != 429 => Error::Authentication {
                what,
                route,
                status: Some(status),
                detail,
            },
            403 => Error::Permission {
                what,
                route,
                status,
                detail,
            },
            404 => Error::NotFound {
                what,
                route,
                reason: "HTTP 404".to_owned(),
                detail,
            },
            409 => Error::Conflict {
                what,
                route,
                attempts,
                detail,
            },
            // Refused for load: "come back later", not a failure of the server.
            429 => Error::Throttled {
                what,
                route,
                status,
                attempts,
                retry_after,
            },
            503 if retry_after.is_some() => Error::Throttled {
                what,
                route,
                status,
                attempts,
                retry_after,
            },
            408 | 500..=599 => Error::Server {
                what,
                route,
                status,
                attempts,
            },
            _ => Error::Rejected {
                what,
                route,
                status,
                detail,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_shareable() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Session>();
        shareable::<Client>();
    }

    #[test]
    fn base_url_validation() {
        assert_eq!(
            validate_base_url(" https://pws.example/BeyondTrust/api/public/v3/ ").unwrap(),
            "https://pws.example/BeyondTrust/api/public/v3"
        );
        for bad in [
            "http://pws.example/BeyondTrust/api/public/v3",
            "pws.example",
            "https://pws.example/x?y=1",
            "https://user:pw@pws.example/x",
            "",
        ] {
            assert!(validate_base_url(bad).is_err(), "{bad}");
        }
    }

    fn raw(title: &str) -> RawSecret {
        RawSecret {
            id: "1".into(),
            title: title.into(),
            folder_path: "f".into(),
            kind: SecretKind::Text,
            password: None,
            metadata: Value::Null,
        }
    }

    #[test]
    fn title_matching() {
        assert_eq!(
            pick_by_title(vec![raw("DB"), raw("db")], "db").unwrap().title,
            "db"
        );
        assert_eq!(
            pick_by_title(vec![raw("x"), raw("DB")], "db").unwrap().title,
            "DB"
        );
        assert!(pick_by_title(vec![raw("other")], "db").is_none());
        assert!(pick_by_title(vec![], "db").is_none());
    }

    #[test]
    fn client_new_validates() {
        let auth = Auth::ApiKey {
            key: "K".into(),
            runas: "u".into(),
            password: None,
        };
        let mut cfg = ClientConfig::new("https://127.0.0.1:1/BeyondTrust/api/public/v3", auth);
        cfg.tls.verify = false;
        assert!(Client::new(cfg.clone()).is_ok());
        let mut bad = cfg.clone();
        bad.request.duration_minutes = 0;
        assert!(Client::new(bad).is_err());
        let mut bad = cfg.clone();
        bad.request.reason = "x".repeat(1001);
        assert!(Client::new(bad).is_err());
        let mut bad = cfg;
        bad.base_url = "http://x".into();
        assert!(Client::new(bad).unwrap_err().to_string().contains("https"));
    }
}
