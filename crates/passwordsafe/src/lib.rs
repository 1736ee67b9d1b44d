//! Async client for the BeyondTrust Password Safe public REST API v3.
//!
//! Knows nothing of Kubernetes. Built on reqwest (HTTP/1.1, cookie store) with a rustls
//! configuration of its own (ring provider, TLS 1.2+), so CA bundles, disabled verification and
//! client certificates are all handled here. No process-wide crypto provider is needed.
//!
//! # Usage
//!
//! ```no_run
//! # async fn run() -> Result<(), passwordsafe::Error> {
//! use passwordsafe::{Auth, Client, ClientConfig, SecretPath};
//!
//! let auth = Auth::from_beyondtrust_key("KEY;runas=svc-agent;")?;
//! let client = Client::new(ClientConfig::new("https://pws.example/BeyondTrust/api/public/v3", auth))?;
//! let session = client.sign_in().await?;
//! let path: SecretPath = "team-a/db/password".parse().map_err(|e| passwordsafe::Error::InvalidInput {
//!     what: "secret path".into(),
//!     reason: format!("{e}"),
//! })?;
//! let result = session.secret(&path).await;     // run many of these concurrently (join_all)
//! let signed_out = session.sign_out().await;    // always, on error paths too
//! let secret = result?;
//! signed_out?;
//! let _bytes: &[u8] = secret.value.expose_bytes();
//! # Ok(()) }
//! ```
//!
//! # Public API
//!
//! - [`ClientConfig`] (start from [`ClientConfig::new`]): `base_url` (https only), [`Auth`]
//!   (`ApiKey { key, runas, password }` or `OAuth { client_id, client_secret }`;
//!   [`Auth::from_beyondtrust_key`] parses `KEY;runas=user;pwd=[p];`), `api_version`
//!   ([`ApiVersion`], sent as `version=` on Secrets Safe calls only), [`TlsOptions`]
//!   (`ca_bundle_pem`, [`CaMode`] `Add`/`Replace`, `verify`, [`ClientIdentity`]),
//!   `connect_timeout` (10 s), `request_timeout` (30 s), [`RetryPolicy`] (200 ms × 2, max 5 s,
//!   budget 60 s, full jitter), [`RequestOptions`] (5 minutes, reason `ps-injector`,
//!   `rotate_on_checkin`), [`Resolver`] (`Builtin` on Linux), `max_concurrent_requests` (16),
//!   `max_file_bytes` (5,000,000).
//! - [`Client::new`] → [`Client::sign_in`] → [`Session`] (`Clone + Send + Sync`, all methods
//!   `&self`): [`Session::secret`], [`Session::folder`], [`Session::managed_account`]
//!   (or [`Session::managed_account_open`] then [`Session::check_in_open_requests`]),
//!   [`Session::user`], [`Session::sign_out`].
//! - References: [`SecretPath`], [`FolderPath`], [`AccountRef`] (`FromStr` with `/`, and
//!   `parse_with_separator`), and the list parsers [`parse_secret_paths`],
//!   [`parse_folder_paths`], [`parse_account_refs`], which report **every** invalid entry
//!   ([`ListError`]). They are `inject_api::refs`' types, re-exported: the grammar and
//!   Password Safe's limits are defined once for the webhook, the agent and this client.
//! - Results: [`Secret`] (`title`, `folder_path` with `\` → `/`, [`SecretKind`], `value`, `id`,
//!   `metadata` = the API object without `Password`), [`ManagedCredential`], [`SecretValue`]
//!   (prints `[redacted]`; read with `expose_bytes`), [`SignedInUser`].
//! - [`Error`]: `Authentication`, `NotFound`, `Permission`, `Conflict`, `Server`, `Rejected`,
//!   `Network`, `InvalidResponse`, `InvalidInput`, `SignedOut`.
//!
//! # Behaviour
//!
//! - **Sessions.** One sign-in per [`Session`], one cookie jar per session; after sign-in only
//!   the cookie authorizes calls. A 401 on any later call means the session expired: the session
//!   signs in again once (single flight: concurrent calls that see the same 401 wait for one
//!   re-authentication) and repeats the call once; a second 401 is an
//!   [`Error::Authentication`]. Sign-out checks in any request still open first; it is
//!   idempotent, and treats 401 as already signed out. Dropping the last clone without signing
//!   out logs a warning and spawns a best-effort sign-out (see [`Session`]).
//! - **Retries.** Network errors (connect, TLS, timeouts, resets), 5xx, 408 and 429 (waiting at
//!   least `Retry-After` seconds) are retried with exponential backoff and full jitter until the
//!   budget is spent; 409 is retried only on `POST Requests`, where it comes from the account's
//!   concurrent-request limit (with `ConflictOption: reuse` a plain conflict cannot happen), and
//!   ends as [`Error::Conflict`]. No other 4xx is retried. Sign-out and its check-ins use at most
//!   10 s.
//! - **Secrets Safe.** `GET secrets-safe/secrets?path=&separator=&title=[&version=]`; the 3.0/3.1
//!   array and the 3.2 `{TotalCount, Data}` shapes are both read; an empty result is
//!   [`Error::NotFound`] naming the path; the entry whose title matches exactly (else
//!   case-insensitively) is taken; `File` secrets are downloaded (at most `max_file_bytes`),
//!   `Credential`/`Text` values come from `Password` (missing `Password` is an error, not an
//!   empty value).
//! - **Managed accounts.** `GET ManagedAccounts?systemName=&accountName=` (object or array) →
//!   `POST Requests` (200 or 201, body = request ID) → `GET Credentials/{id}` (the body must be a
//!   JSON string: anything else is [`Error::InvalidResponse`], never an empty password) →
//!   `PUT Requests/{id}/checkin`, the check-in also when the credentials call failed. Because
//!   `reuse` shares one request between all clients of a user, releases of one account run one
//!   at a time per session, a `Credentials` 403/404 is followed by one new request, and a
//!   check-in answered 403/404 counts as already closed.
//! - **Secrecy.** Values, keys, tokens and cookies never appear in `Debug`, `Display`, errors or
//!   logs. Error bodies are shown truncated, and never for `Credentials` or 5xx answers. Calls
//!   are traced at `debug` with method, route template (ids masked), status, duration and
//!   attempt.
//! - **DNS.** [`Resolver::Builtin`] (hickory-resolver) reads `/etc/hosts` and
//!   `/etc/resolv.conf` (search, ndots) and queries the nameservers over UDP/TCP, so a static
//!   binary on `FROM scratch` needs no NSS; without a nameserver in `/etc/resolv.conf` (or
//!   without the file) only `/etc/hosts` is read; answers are cached (at most 60 s) for all the
//!   sessions of a [`Client`]; a failure is a [`ResolveError`] naming the host. HTTP proxies are
//!   taken from the usual `HTTPS_PROXY`/`NO_PROXY` variables.
//! - **HTTP/2.** ALPN offers `h2`, then `http/1.1`. Password Safe's IIS speaks HTTP/2, and
//!   then every call of a session rides sign-in's connection, as many at once as the server
//!   allows: one TCP connection and one TLS handshake per session, however many references are
//!   fetched together. Behind an HTTP/1.1-only proxy each call in flight opens a connection of
//!   its own (later handshakes resume the first connection's TLS session while its tickets
//!   last, through rustls' in-memory session cache). Cookies, timeouts, retries and the size
//!   limit of responses behave the same on both.
//! - **TLS.** See [`TlsOptions`]; system roots come from the platform bundle
//!   (`rustls-native-certs`, chosen over `webpki-roots` to keep the static binary small), and are
//!   not read at all in [`CaMode::Replace`].

mod client;
mod config;
mod error;
mod path;
mod resolve;
mod retry;
mod secret;
mod tls;

pub use client::{Client, Session};
pub use config::{
    ApiVersion, Auth, CaMode, ClientConfig, ClientIdentity, RequestOptions, Resolver, RetryPolicy, TlsOptions,
};
pub use error::Error;
pub use path::{
    AccountRef, DEFAULT_SEPARATOR, FolderPath, ListError, MAX_ACCOUNT_NAME_LEN, MAX_FOLDER_DEPTH,
    MAX_FOLDER_NAME_LEN, MAX_FOLDER_PATH_LEN, MAX_SYSTEM_NAME_LEN, MAX_TITLE_LEN, RefError, RefErrorKind,
    RefKind, SecretPath, parse_account_refs, parse_folder_paths, parse_secret_paths,
};
pub use resolve::ResolveError;
pub use secrecy::{ExposeSecret, SecretString};
pub use secret::{ManagedCredential, Secret, SecretKind, SecretValue, SignedInUser};
