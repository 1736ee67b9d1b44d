//! Small helpers: timestamps, GUIDs, random tokens, query strings and cookies.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// Formats a time as the server does: ISO 8601 UTC with seven fractional digits and `Z`,
/// e.g. `2026-09-14T12:33:32.8082359Z` (humantime writes nine; .NET's `DateTime` has 100 ns
/// ticks, so the last two digits go).
pub(crate) fn iso_utc(t: SystemTime) -> String {
    let mut s = humantime::format_rfc3339_nanos(t.max(UNIX_EPOCH)).to_string();
    s.truncate(s.len() - 3); // "nnZ"
    s.push('Z');
    s
}

/// A stable GUID (lower case, 8-4-4-4-12) derived from a name, so that ids do not change
/// between runs of the same seed.
pub(crate) fn guid_from(name: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("ps-emulator:{name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 style (name based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Random bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // SystemRandom only fails when the OS has no entropy source; nothing sensible can follow.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("operating system random source failed");
    buf
}

/// A random string drawn from `alphabet`.
pub(crate) fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>() {
            // Rejection sampling keeps the distribution uniform.
            let limit = 256 - (256 % alphabet.len());
            if usize::from(b) < limit && out.len() < len {
                out.push(alphabet[usize::from(b) % alphabet.len()] as char);
            }
        }
    }
    out
}

/// Base64url without padding (RFC 4648 §5), for JWT-shaped tokens.
pub(crate) fn base64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Query string pairs, decoded (`+` and percent escapes).
pub(crate) struct Query<'a> {
    pairs: Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    pub(crate) fn parse(raw: Option<&'a str>) -> Self {
        let pairs = raw
            .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
            .unwrap_or_default();
        Query { pairs }
    }

    /// The first value of a key, matched case-insensitively (as the real server does).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_ref())
    }
}

/// The value of the cookie `name` in a `Cookie` header value.
pub(crate) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(UNIX_EPOCH), "1970-01-01T00:00:00.0000000Z");
        let t = UNIX_EPOCH + Duration::new(1_789_389_212, 808_235_900);
        assert_eq!(iso_utc(t), "2026-09-14T12:33:32.8082359Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso_utc(leap), "2000-02-29T00:00:00.0000000Z");
        // Ticks of 100 ns: the digits below are cut, not rounded.
        assert_eq!(
            iso_utc(UNIX_EPOCH + Duration::from_nanos(99)),
            "1970-01-01T00:00:00.0000000Z"
        );
        assert_eq!(
            iso_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.0000000Z"
        );
    }

    #[test]
    fn guids_are_stable_and_well_formed() {
        let a = guid_from("safe:team-a");
        assert_eq!(a, guid_from("safe:team-a"));
        assert_ne!(a, guid_from("safe:team-b"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(&a[14..15], "5");
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn random_strings_use_the_alphabet() {
        let s = random_string(40, b"ab");
        assert_eq!(s.len(), 40);
        assert!(s.chars().all(|c| c == 'a' || c == 'b'));
    }

    #[test]
    fn query_keys_are_case_insensitive() {
        let q = Query::parse(Some("Path=team-a%2Fdb&TITLE=a+b&separator=%2F"));
        assert_eq!(q.get("path"), Some("team-a/db"));
        assert_eq!(q.get("title"), Some("a b"));
        assert_eq!(q.get("Separator"), Some("/"));
        assert_eq!(q.get("version"), None);
    }

    #[test]
    fn cookies() {
        let h = "a=1; ASP.NET_SessionId=abc ; b=2";
        assert_eq!(cookie_value(h, "ASP.NET_SessionId"), Some("abc"));
        assert_eq!(cookie_value(h, "c"), None);
    }
}
