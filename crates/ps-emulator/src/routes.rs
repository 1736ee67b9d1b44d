//! Case-insensitive routing of API paths to route keys.

use hyper::Method;

/// The API prefixes the emulator answers under (lower case, without trailing slash).
pub(crate) const PREFIXES: [&str; 2] = [
    "/beyondtrust/api/public/v3",
    "/eeye.retinacs.server/api/public/v3",
];

/// Every API route. The discriminant indexes per-route counters and faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Token,
    SignAppIn,
    Signout,
    Secrets,
    SecretById,
    SecretFileDownload,
    Folders,
    FolderById,
    FolderSecrets,
    Safes,
    SafeById,
    ManagedAccounts,
    PostRequests,
    GetRequests,
    Credentials,
    Checkin,
}

pub(crate) const ROUTE_COUNT: usize = 16;

impl Route {
    pub const ALL: [Route; ROUTE_COUNT] = [
        Route::Token,
        Route::SignAppIn,
        Route::Signout,
        Route::Secrets,
        Route::SecretById,
        Route::SecretFileDownload,
        Route::Folders,
        Route::FolderById,
        Route::FolderSecrets,
        Route::Safes,
        Route::SafeById,
        Route::ManagedAccounts,
        Route::PostRequests,
        Route::GetRequests,
        Route::Credentials,
        Route::Checkin,
    ];

    /// The route key used in `/_emulator/state` and in faults, e.g. `GET secrets-safe/secrets`.
    pub fn key(self) -> &'static str {
        match self {
            Route::Token => "POST auth/connect/token",
            Route::SignAppIn => "POST auth/signappin",
            Route::Signout => "POST auth/signout",
            Route::Secrets => "GET secrets-safe/secrets",
            Route::SecretById => "GET secrets-safe/secrets/{id}",
            Route::SecretFileDownload => "GET secrets-safe/secrets/{id}/file/download",
            Route::Folders => "GET secrets-safe/folders",
            Route::FolderById => "GET secrets-safe/folders/{id}",
            Route::FolderSecrets => "GET secrets-safe/folders/{id}/secrets",
            Route::Safes => "GET secrets-safe/safes",
            Route::SafeById => "GET secrets-safe/safes/{id}",
            Route::ManagedAccounts => "GET managedaccounts",
            Route::PostRequests => "POST requests",
            Route::GetRequests => "GET requests",
            Route::Credentials => "GET credentials/{id}",
            Route::Checkin => "PUT requests/{id}/checkin",
        }
    }

    /// Parses a route key, ignoring case and surrounding or repeated spaces.
    pub fn from_key(key: &str) -> Option<Route> {
        let mut parts = key.split_whitespace();
        let (method, path) = (parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let path = path.trim_matches('/');
        Route::ALL.into_iter().find(|r| {
            let (m, p) = r.key().split_once(' ').unwrap_or_default();
            m.eq_ignore_ascii_case(method) && p.eq_ignore_ascii_case(path)
        })
    }
}

/// Result of matching a request path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Matched<'a> {
    /// An API route, with the `{id}` segment when it has one.
    Api(Route, Option<&'a str>),
    /// The path exists but not for this method.
    MethodNotAllowed,
    NotFound,
}

/// Strips an API prefix from a lower-cased path. Returns the rest without surrounding slashes.
pub(crate) fn strip_prefix(lower_path: &str) -> Option<&str> {
    PREFIXES.iter().find_map(|p| {
        let rest = lower_path.strip_prefix(p)?;
        (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_matches('/'))
    })
}

/// Matches the path below the prefix (lower-cased, no surrounding slashes).
pub(crate) fn match_route<'a>(method: &Method, rest: &'a str) -> Matched<'a> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (route, id) = match segs.as_slice() {
        ["auth", "connect", "token"] => (Route::Token, None),
        ["auth", "signappin"] => (Route::SignAppIn, None),
        ["auth", "signout"] => (Route::Signout, None),
        ["secrets-safe", "secrets"] => (Route::Secrets, None),
        ["secrets-safe", "secrets", id] => (Route::SecretById, Some(*id)),
        ["secrets-safe", "secrets", id, "file", "download"] => (Route::SecretFileDownload, Some(*id)),
        ["secrets-safe", "folders"] => (Route::Folders, None),
        ["secrets-safe", "folders", id] => (Route::FolderById, Some(*id)),
        ["secrets-safe", "folders", id, "secrets"] => (Route::FolderSecrets, Some(*id)),
        ["secrets-safe", "safes"] => (Route::Safes, None),
        ["secrets-safe", "safes", id] => (Route::SafeById, Some(*id)),
        ["managedaccounts"] => (Route::ManagedAccounts, None),
        ["requests"] => {
            return match *method {
                Method::GET => Matched::Api(Route::GetRequests, None),
                Method::POST => Matched::Api(Route::PostRequests, None),
                _ => Matched::MethodNotAllowed,
            };
        }
        ["credentials", id] => (Route::Credentials, Some(*id)),
        ["requests", id, "checkin"] => (Route::Checkin, Some(*id)),
        _ => return Matched::NotFound,
    };
    let expected = route.key().split_once(' ').map(|(m, _)| m).unwrap_or_default();
    if method.as_str() == expected {
        Matched::Api(route, id)
    } else {
        Matched::MethodNotAllowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_are_unique() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(Route::from_key(r.key()), Some(*r));
            assert_eq!(Route::from_key(&r.key().to_uppercase()), Some(*r));
        }
        assert_eq!(
            Route::from_key("  get   /secrets-safe/secrets/ "),
            Some(Route::Secrets)
        );
        assert_eq!(Route::from_key("GET nothing"), None);
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            strip_prefix("/beyondtrust/api/public/v3/auth/signappin"),
            Some("auth/signappin")
        );
        assert_eq!(
            strip_prefix("/eeye.retinacs.server/api/public/v3/requests/"),
            Some("requests")
        );
        assert_eq!(strip_prefix("/beyondtrust/api/public/v31/requests"), None);
        assert_eq!(strip_prefix("/other"), None);
    }

    #[test]
    fn matching() {
        assert_eq!(
            match_route(&Method::POST, "requests"),
            Matched::Api(Route::PostRequests, None)
        );
        assert_eq!(
            match_route(&Method::PUT, "requests/7/checkin"),
            Matched::Api(Route::Checkin, Some("7"))
        );
        assert_eq!(
            match_route(&Method::GET, "requests/7/checkin"),
            Matched::MethodNotAllowed
        );
        assert_eq!(
            match_route(&Method::GET, "secrets-safe/secrets/abc/file/download"),
            Matched::Api(Route::SecretFileDownload, Some("abc"))
        );
        assert_eq!(
            match_route(&Method::GET, "secrets-safe//folders"),
            Matched::Api(Route::Folders, None)
        );
        assert_eq!(match_route(&Method::GET, "nope"), Matched::NotFound);
    }
}
