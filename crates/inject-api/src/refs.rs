//! References to what Password Safe holds: secret paths, folder paths, managed accounts and the
//! env sources built from them. The grammar and the limits live here and nowhere else: the
//! webhook parses annotations with these constructors, the agent parses `PS_AGENT_CONFIG` and
//! BeyondTrust's `SECRETS_LIST`/`FOLDER_LIST`/`MANAGED_ACCOUNTS_LIST` with them, and the
//! Password Safe client takes only these types. A value of [`SecretPath`], [`FolderPath`] or
//! [`AccountRef`] is valid by construction, so whatever the webhook admits, the agent accepts.
//!
//! # Grammar
//!
//! - The input is split on the separator (`/`; a client may choose another single character
//!   that is not whitespace, a control character, a letter or a digit).
//! - The whole input and every segment are whitespace-trimmed; the value keeps the trimmed
//!   form, so ` team-a / db ` and `team-a/db` are the same reference.
//! - A segment must not be empty (`a//b`, a leading or trailing separator), `.` or `..`, or
//!   contain a control character.
//! - Secrets are `folder/.../title`: one to 7 folders (a safe and up to 6 subfolders) and a
//!   title. A lone `title` is refused (BeyondTrust's Go library would read it as `title/title`).
//! - Folders are `folder[/subfolder...]`: one to 7 segments.
//! - Managed accounts are exactly `system/account`.
//!
//! # Limits
//!
//! Password Safe's own limits, as its client libraries encode them: a folder name ≤ 256, a
//! folder path as sent ≤ 1798 (7 × 256 + 6 separators), a title ≤ 256, a managed system name
//! ≤ 128 and an account name ≤ 245. Lengths are counted in UTF-16 code units, the unit of the
//! server's .NET strings: a character outside the Basic Multilingual Plane (an emoji) counts
//! twice. BeyondTrust's Go library is stricter for non-ASCII names (it counts UTF-8 bytes) and
//! allows folder paths of only 1792; its limits bind only programs that use it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The separator of every reference in annotations and in `PS_AGENT_CONFIG`.
pub const DEFAULT_SEPARATOR: char = '/';
/// Folders in a path, the safe included (a safe and up to 6 subfolders).
pub const MAX_FOLDER_DEPTH: usize = 7;
/// Length of one folder name, in UTF-16 code units.
pub const MAX_FOLDER_NAME_LEN: usize = 256;
/// Length of a whole folder path as sent in `path=` (7 × 256 + 6 separators).
pub const MAX_FOLDER_PATH_LEN: usize = MAX_FOLDER_DEPTH * MAX_FOLDER_NAME_LEN + MAX_FOLDER_DEPTH - 1;
/// Length of a secret's title.
pub const MAX_TITLE_LEN: usize = 256;
/// Length of a managed system's name.
pub const MAX_SYSTEM_NAME_LEN: usize = 128;
/// Length of a managed account's name.
pub const MAX_ACCOUNT_NAME_LEN: usize = 245;

/// What a reference names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// `folder/.../title`
    Secret,
    /// `folder[/subfolder...]`
    Folder,
    /// `system/account`
    ManagedAccount,
}

impl RefKind {
    /// The shape to write, with an example: the fix of every grammar error.
    pub fn shape(self) -> &'static str {
        match self {
            RefKind::Secret => "folder/.../title, e.g. \"team-a/db/password\"",
            RefKind::Folder => "folder[/subfolder...], e.g. \"team-a/app\"",
            RefKind::ManagedAccount => "system/account, e.g. \"db-prod/svc_app\"",
        }
    }
}

impl fmt::Display for RefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefKind::Secret => "secret path",
            RefKind::Folder => "folder path",
            RefKind::ManagedAccount => "managed account",
        })
    }
}

/// Why a reference is refused. Each message reads after the reference: `secret path "x" has
/// no folder`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefErrorKind {
    #[error("is empty")]
    Empty,
    #[error(
        "cannot be split on {0:?} (the separator is one character that is not whitespace, a letter, a digit or a control character)"
    )]
    InvalidSeparator(char),
    #[error("has no folder")]
    MissingFolder,
    #[error("has {found} part(s), not exactly two")]
    AccountParts { found: usize },
    /// `a//b`, a leading or a trailing separator. Positions are 1-based.
    #[error("has an empty segment (number {position})")]
    EmptySegment { position: usize },
    #[error("has a \".\" or \"..\" segment (number {position})")]
    DotSegment { position: usize },
    #[error("contains the control character U+{code:04X} (segment {position})")]
    ControlCharacter { position: usize, code: u32 },
    #[error("has a folder depth of {depth}, more than the maximum of {max}")]
    TooDeep { depth: usize, max: usize },
    /// `what`: `folder name`, `folder path`, `title`, `system name` or `account name`.
    #[error("has a {what} of {len} characters (UTF-16 code units), more than the maximum of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl RefErrorKind {
    /// What to do about it.
    pub fn fix(&self, kind: RefKind) -> String {
        match self {
            RefErrorKind::TooDeep { max, .. } => format!(
                "Password Safe nests folders at most {max} deep (a safe and {} subfolders): use a shallower path",
                max - 1
            ),
            RefErrorKind::TooLong { what, .. } => {
                format!("Password Safe cannot hold a longer {what}: shorten it")
            }
            _ => format!("use {}", kind.shape()),
        }
    }
}

/// A refused reference: its kind, the input (shortened when shown) and the reason. Displays
/// as `secret path "a/b/c/d/e/f/g/h/t" has a folder depth of 8, more than the maximum of 7;
/// <fix>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefError {
    pub kind: RefKind,
    pub input: String,
    pub reason: RefErrorKind,
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 60;
        let input = self.input.trim();
        if input.chars().count() > SHOWN {
            let head: String = input.chars().take(SHOWN).collect();
            write!(f, "{} {head:?}…", self.kind)?;
        } else {
            write!(f, "{} {input:?}", self.kind)?;
        }
        write!(f, " {}; {}", self.reason, self.reason.fix(self.kind))
    }
}

impl std::error::Error for RefError {}

/// One refused entry of a list, with its 0-based index (shown 1-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {}: {error}", index + 1)]
pub struct ListError {
    pub index: usize,
    pub error: RefError,
}

/// A folder path: 1–7 trimmed segments, within Password Safe's limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolderPath {
    /// Canonical: trimmed segments joined by `separator`.
    text: String,
    separator: char,
}

/// A secret `folder/.../title`, within Password Safe's limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath {
    /// Canonical: trimmed segments joined by `separator`; the title starts at `title_at`.
    text: String,
    title_at: usize,
    separator: char,
}

/// A managed account `system/account`, within Password Safe's limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountRef {
    /// Canonical `system<separator>account`; the account starts at `account_at`.
    text: String,
    account_at: usize,
    separator: char,
}

fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), RefErrorKind> {
    let len = utf16_len(s);
    if len > max {
        return Err(RefErrorKind::TooLong { what, len, max });
    }
    Ok(())
}

/// Segment starts kept by [`canonical`]: enough for the deepest valid secret (7 folders and a
/// title); a longer input is refused for its depth, which needs only the count.
const KEPT_STARTS: usize = MAX_FOLDER_DEPTH + 1;

/// The canonical text of a reference and where its segments start.
struct Canonical {
    text: String,
    starts: [usize; KEPT_STARTS],
    count: usize,
}

impl Canonical {
    /// The starts of the segments, when all of them were kept.
    fn starts(&self) -> Option<&[usize]> {
        self.starts.get(..self.count)
    }
}

/// Splits and trims `input` into a canonical string (no allocation but the string itself).
/// Checks only what every kind shares (separator, emptiness, `.`/`..`, control characters).
fn canonical(input: &str, separator: char) -> Result<Canonical, RefErrorKind> {
    if separator.is_whitespace() || separator.is_control() || separator.is_alphanumeric() {
        return Err(RefErrorKind::InvalidSeparator(separator));
    }
    let input = input.trim();
    if input.is_empty() {
        return Err(RefErrorKind::Empty);
    }
    let mut c = Canonical {
        text: String::with_capacity(input.len()),
        starts: [0; KEPT_STARTS],
        count: 0,
    };
    for (i, segment) in input.split(separator).enumerate() {
        let position = i + 1;
        let segment = segment.trim();
        if segment.is_empty() {
            return Err(RefErrorKind::EmptySegment { position });
        }
        if segment == "." || segment == ".." {
            return Err(RefErrorKind::DotSegment { position });
        }
        if let Some(ch) = segment.chars().find(|ch| ch.is_control()) {
            return Err(RefErrorKind::ControlCharacter {
                position,
                code: ch.into(),
            });
        }
        if i > 0 {
            c.text.push(separator);
        }
        if let Some(start) = c.starts.get_mut(i) {
            *start = c.text.len();
        }
        c.text.push_str(segment);
        c.count = position;
    }
    Ok(c)
}

fn too_deep(folders: usize) -> RefErrorKind {
    RefErrorKind::TooDeep {
        depth: folders,
        max: MAX_FOLDER_DEPTH,
    }
}

/// Depth and lengths of the folder part `text[..end]` whose segments start at `starts`.
fn check_folders(text: &str, starts: &[usize], end: usize, separator: char) -> Result<(), RefErrorKind> {
    if starts.len() > MAX_FOLDER_DEPTH {
        return Err(too_deep(starts.len()));
    }
    let sep_len = separator.len_utf8();
    for (i, &start) in starts.iter().enumerate() {
        let stop = starts.get(i + 1).map_or(end, |next| next - sep_len);
        check_len("folder name", &text[start..stop], MAX_FOLDER_NAME_LEN)?;
    }
    check_len("folder path", &text[..end], MAX_FOLDER_PATH_LEN)
}

impl FolderPath {
    /// Parses `folder<sep>...` with another separator than `/`.
    pub fn parse_with_separator(input: &str, separator: char) -> Result<FolderPath, RefError> {
        Self::parse_inner(input, separator).map_err(|reason| RefError {
            kind: RefKind::Folder,
            input: input.to_owned(),
            reason,
        })
    }

    fn parse_inner(input: &str, separator: char) -> Result<FolderPath, RefErrorKind> {
        let c = canonical(input, separator)?;
        let starts = c.starts().ok_or(too_deep(c.count))?;
        check_folders(&c.text, starts, c.text.len(), separator)?;
        Ok(FolderPath {
            text: c.text,
            separator,
        })
    }

    /// The canonical path, as sent in `path=`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The folder names, the safe first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.text.split(self.separator)
    }

    /// The separator, as sent in `separator=`.
    pub fn separator(&self) -> char {
        self.separator
    }
}

impl SecretPath {
    /// Parses `folder<sep>...<sep>title` with another separator than `/`.
    pub fn parse_with_separator(input: &str, separator: char) -> Result<SecretPath, RefError> {
        Self::parse_inner(input, separator).map_err(|reason| RefError {
            kind: RefKind::Secret,
            input: input.to_owned(),
            reason,
        })
    }

    fn parse_inner(input: &str, separator: char) -> Result<SecretPath, RefErrorKind> {
        let c = canonical(input, separator)?;
        let starts = c.starts().ok_or(too_deep(c.count - 1))?;
        let Some((&title_at, folders)) = starts.split_last().filter(|(_, f)| !f.is_empty()) else {
            return Err(RefErrorKind::MissingFolder);
        };
        check_folders(&c.text, folders, title_at - separator.len_utf8(), separator)?;
        check_len("title", &c.text[title_at..], MAX_TITLE_LEN)?;
        Ok(SecretPath {
            text: c.text,
            title_at,
            separator,
        })
    }

    /// The canonical `folder/.../title`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The folder path, as sent in `path=`.
    pub fn folder(&self) -> &str {
        &self.text[..self.title_at - self.separator.len_utf8()]
    }

    /// The folder names, the safe first.
    pub fn folder_segments(&self) -> impl Iterator<Item = &str> {
        self.folder().split(self.separator)
    }

    /// The title, as sent in `title=`.
    pub fn title(&self) -> &str {
        &self.text[self.title_at..]
    }

    pub fn separator(&self) -> char {
        self.separator
    }
}

impl AccountRef {
    /// Parses `system<sep>account` with another separator than `/`.
    pub fn parse_with_separator(input: &str, separator: char) -> Result<AccountRef, RefError> {
        Self::parse_inner(input, separator).map_err(|reason| RefError {
            kind: RefKind::ManagedAccount,
            input: input.to_owned(),
            reason,
        })
    }

    fn parse_inner(input: &str, separator: char) -> Result<AccountRef, RefErrorKind> {
        let c = canonical(input, separator)?;
        let Some(&[_, account_at]) = c.starts() else {
            return Err(RefErrorKind::AccountParts { found: c.count });
        };
        let system = &c.text[..account_at - separator.len_utf8()];
        check_len("system name", system, MAX_SYSTEM_NAME_LEN)?;
        check_len("account name", &c.text[account_at..], MAX_ACCOUNT_NAME_LEN)?;
        Ok(AccountRef {
            text: c.text,
            account_at,
            separator,
        })
    }

    /// The canonical `system/account`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The managed system's name (`systemName=`).
    pub fn system(&self) -> &str {
        &self.text[..self.account_at - self.separator.len_utf8()]
    }

    /// The account's name (`accountName=`).
    pub fn account(&self) -> &str {
        &self.text[self.account_at..]
    }
}

macro_rules! text_ref {
    ($t:ty, $what:literal) => {
        impl FromStr for $t {
            type Err = RefError;
            fn from_str(s: &str) -> Result<Self, RefError> {
                <$t>::parse_with_separator(s, DEFAULT_SEPARATOR)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }

        /// Compares the canonical text.
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.text == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.text == *other
            }
        }

        /// The canonical string. Only `/`-separated references have a string form that
        /// parses back; others are refused rather than written ambiguously.
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if self.separator != DEFAULT_SEPARATOR {
                    return Err(serde::ser::Error::custom(concat!(
                        "only a /-separated ",
                        $what,
                        " can be serialised"
                    )));
                }
                s.serialize_str(&self.text)
            }
        }

        /// Through the validating parser: a document holding an invalid reference does not
        /// deserialise.
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_ref!(FolderPath, "folder path");
text_ref!(SecretPath, "secret path");
text_ref!(AccountRef, "managed account");

/// Where a single value (an env var of exec mode) comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ValueRef {
    /// The value (password, text or file content) of a secret.
    Secret(SecretPath),
    /// The username of a credential secret.
    SecretUsername(SecretPath),
    /// The password of a managed account.
    Account(AccountRef),
}

/// The env-source forms, for messages.
pub const ENV_SOURCE_FORMS: &str =
    "folder/title, secret:folder/title, username:folder/title or account:system/account";

impl ValueRef {
    /// The source of an `env-<VAR>` annotation: `folder/.../title` or `secret:folder/.../title`,
    /// `username:folder/.../title`, or `account:system/account`. A `:` before the first `/`
    /// introduces the kind, so a title may contain `:` (`folder/ti:tle`).
    pub fn parse_source(value: &str) -> Result<ValueRef, String> {
        let value = value.trim();
        let (kind, rest) = match value.split_once(':') {
            Some((kind, rest)) if !kind.contains(DEFAULT_SEPARATOR) => (Some(kind.trim()), rest),
            _ => (None, value),
        };
        let parsed = match kind {
            None | Some("secret") => rest.parse().map(ValueRef::Secret),
            Some("username") => rest.parse().map(ValueRef::SecretUsername),
            Some("account") => rest.parse().map(ValueRef::Account),
            Some(other) => return Err(format!("unknown source {other:?}; use {ENV_SOURCE_FORMS}")),
        };
        parsed.map_err(|e| e.to_string())
    }
}

/// Every entry of a list parsed, or every invalid one.
pub type ListResult<T> = Result<Vec<T>, Vec<ListError>>;

fn parse_list<T>(list: &[&str], parse: impl Fn(&str) -> Result<T, RefError>) -> ListResult<T> {
    let mut ok = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (index, input) in list.iter().enumerate() {
        match parse(input) {
            Ok(v) => ok.push(v),
            Err(error) => errors.push(ListError { index, error }),
        }
    }
    if errors.is_empty() { Ok(ok) } else { Err(errors) }
}

/// Parses every entry; either all are valid (in order) or every invalid one is reported.
pub fn parse_secret_paths(list: &[&str], separator: char) -> ListResult<SecretPath> {
    parse_list(list, |s| SecretPath::parse_with_separator(s, separator))
}

/// [`parse_secret_paths`] for folders.
pub fn parse_folder_paths(list: &[&str], separator: char) -> ListResult<FolderPath> {
    parse_list(list, |s| FolderPath::parse_with_separator(s, separator))
}

/// [`parse_secret_paths`] for managed accounts.
pub fn parse_account_refs(list: &[&str], separator: char) -> ListResult<AccountRef> {
    parse_list(list, |s| AccountRef::parse_with_separator(s, separator))
}

/// A comma-separated list (annotations `secrets`, `folders`, `managed-accounts` and
/// BeyondTrust's `SECRETS_LIST`, `FOLDER_LIST`, `MANAGED_ACCOUNTS_LIST`): entries trimmed,
/// empty entries dropped.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(c: char, count: usize) -> String {
        std::iter::repeat_n(c, count).collect()
    }

    fn reason<T: fmt::Debug>(r: Result<T, RefError>) -> RefErrorKind {
        r.unwrap_err().reason
    }

    #[test]
    fn limits_are_the_servers() {
        assert_eq!(MAX_FOLDER_PATH_LEN, 1798);
    }

    #[test]
    fn parses_and_trims() {
        let p: SecretPath = "  team-a / db /  password ".parse().unwrap();
        assert_eq!(p.folder_segments().collect::<Vec<_>>(), ["team-a", "db"]);
        assert_eq!(p.title(), "password");
        assert_eq!(p.folder(), "team-a/db");
        assert_eq!(p.to_string(), "team-a/db/password");
        assert_eq!(p, "team-a/db/password".parse::<SecretPath>().unwrap());
        let p: SecretPath = "safe/title".parse().unwrap();
        assert_eq!(p.folder(), "safe");
        let f: FolderPath = " a /b ".parse().unwrap();
        assert_eq!(f.as_str(), "a/b");
        assert_eq!(f.segments().collect::<Vec<_>>(), ["a", "b"]);
        // Inner spaces and non-ASCII are kept.
        let p: SecretPath = "Équipe A/mot de passe".parse().unwrap();
        assert_eq!(p.title(), "mot de passe");
    }

    #[test]
    fn separator_handling() {
        let p = SecretPath::parse_with_separator("a/b*c/d*e f", '*').unwrap();
        assert_eq!(p.folder_segments().collect::<Vec<_>>(), ["a/b", "c/d"]);
        assert_eq!(p.title(), "e f");
        assert_eq!(p.folder(), "a/b*c/d");
        assert_eq!(p.separator(), '*');
        let p = SecretPath::parse_with_separator("α→β→γ", '→').unwrap();
        assert_eq!((p.folder(), p.title()), ("α→β", "γ"));
        for bad in [' ', '\t', 'a', '1', '\0'] {
            assert_eq!(
                reason(SecretPath::parse_with_separator("x y", bad)),
                RefErrorKind::InvalidSeparator(bad)
            );
        }
        assert_eq!(
            reason(SecretPath::parse_with_separator("a/b", '*')),
            RefErrorKind::MissingFolder
        );
    }

    #[test]
    fn structural_errors() {
        use RefErrorKind::*;
        let cases = [
            ("", Empty),
            ("   ", Empty),
            ("title", MissingFolder),
            ("a//b", EmptySegment { position: 2 }),
            ("/a/b", EmptySegment { position: 1 }),
            ("a/b/", EmptySegment { position: 3 }),
            ("a/ /b", EmptySegment { position: 2 }),
            ("a/../b", DotSegment { position: 2 }),
            ("./b", DotSegment { position: 1 }),
            ("a/b\0c", ControlCharacter { position: 2, code: 0 }),
            (
                "a\nx/b",
                ControlCharacter {
                    position: 1,
                    code: 10,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(reason(input.parse::<SecretPath>()), want, "{input:?}");
        }
        // A dot inside a name is fine.
        assert!("a/.b/c..d".parse::<SecretPath>().is_ok());
    }

    #[test]
    fn depth_limit() {
        let seven: SecretPath = "1/2/3/4/5/6/7/title".parse().unwrap();
        assert_eq!(seven.folder_segments().count(), 7);
        assert_eq!(
            reason("a/b/c/d/e/f/g/h/title".parse::<SecretPath>()),
            RefErrorKind::TooDeep { depth: 8, max: 7 }
        );
        assert!("1/2/3/4/5/6/7".parse::<FolderPath>().is_ok());
        assert_eq!(
            reason("1/2/3/4/5/6/7/8".parse::<FolderPath>()),
            RefErrorKind::TooDeep { depth: 8, max: 7 }
        );
    }

    #[test]
    fn length_limits() {
        let too_long = |what, len, max| RefErrorKind::TooLong { what, len, max };
        assert!(format!("f/{}", n('t', 256)).parse::<SecretPath>().is_ok());
        assert_eq!(
            reason(format!("f/{}", n('t', 257)).parse::<SecretPath>()),
            too_long("title", 257, 256)
        );
        // UTF-16 code units: 'é' counts one, '😀' counts two.
        assert!(format!("f/{}", n('é', 256)).parse::<SecretPath>().is_ok());
        assert!(format!("f/{}", n('😀', 128)).parse::<SecretPath>().is_ok());
        assert_eq!(
            reason(format!("f/{}t", n('😀', 128)).parse::<SecretPath>()),
            too_long("title", 257, 256)
        );
        assert_eq!(
            reason(format!("{}/t", n('f', 257)).parse::<SecretPath>()),
            too_long("folder name", 257, 256)
        );
        assert_eq!(
            reason(format!("a/{}/t", n('f', 257)).parse::<FolderPath>()),
            too_long("folder name", 257, 256)
        );
        // 7 × 256 + 6 separators = 1798: the maximum, accepted.
        let max_folder = vec![n('f', 256); 7].join("/");
        assert_eq!(max_folder.len(), 1798);
        assert!(format!("{max_folder}/t").parse::<SecretPath>().is_ok());
        assert!(max_folder.parse::<FolderPath>().is_ok());
        // With a two-unit separator the same names exceed the folder path limit.
        let wide = vec![n('f', 256); 7].join("𝄞");
        assert_eq!(
            reason(FolderPath::parse_with_separator(&wide, '𝄞')),
            too_long("folder path", 1804, 1798)
        );
    }

    #[test]
    fn accounts() {
        let a: AccountRef = " db-prod / svc_app ".parse().unwrap();
        assert_eq!((a.system(), a.account()), ("db-prod", "svc_app"));
        assert_eq!(a.to_string(), "db-prod/svc_app");
        let a: AccountRef = r"win01/CORP\svc".parse().unwrap();
        assert_eq!(a.account(), r"CORP\svc");
        assert_eq!(
            reason("x".parse::<AccountRef>()),
            RefErrorKind::AccountParts { found: 1 }
        );
        assert_eq!(
            reason("a/b/c".parse::<AccountRef>()),
            RefErrorKind::AccountParts { found: 3 }
        );
        assert_eq!(
            reason("a//c".parse::<AccountRef>()),
            RefErrorKind::EmptySegment { position: 2 }
        );
        assert!(
            format!("{}/{}", n('s', 128), n('a', 245))
                .parse::<AccountRef>()
                .is_ok()
        );
        assert_eq!(
            reason(format!("{}/a", n('s', 129)).parse::<AccountRef>()),
            RefErrorKind::TooLong {
                what: "system name",
                len: 129,
                max: 128
            }
        );
        assert_eq!(
            reason(format!("s/{}", n('a', 246)).parse::<AccountRef>()),
            RefErrorKind::TooLong {
                what: "account name",
                len: 246,
                max: 245
            }
        );
        let a = AccountRef::parse_with_separator("a/x|b", '|').unwrap();
        assert_eq!((a.system(), a.account()), ("a/x", "b"));
    }

    #[test]
    fn messages_name_the_limit_and_the_fix() {
        let e = "a/b/c/d/e/f/g/h/title".parse::<SecretPath>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret path \"a/b/c/d/e/f/g/h/title\" has a folder depth of 8, more than the maximum of 7; \
             Password Safe nests folders at most 7 deep (a safe and 6 subfolders): use a shallower path"
        );
        let e = format!("f/{}", n('t', 300)).parse::<SecretPath>().unwrap_err();
        let shown = format!("secret path \"f/{}\"… has a title of 300 characters", n('t', 58));
        assert!(e.to_string().starts_with(&shown), "{e}");
        assert!(
            e.to_string().ends_with(
                "(UTF-16 code units), more than the maximum of 256; Password Safe cannot hold a longer \
                 title: shorten it"
            ),
            "{e}"
        );
        let e = "password".parse::<SecretPath>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret path \"password\" has no folder; use folder/.../title, e.g. \"team-a/db/password\""
        );
        let e = "x".parse::<AccountRef>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "managed account \"x\" has 1 part(s), not exactly two; use system/account, e.g. \"db-prod/svc_app\""
        );
    }

    #[test]
    fn lists_report_every_invalid_entry() {
        let list = ["a/b", "bad", "c/d/e", "", "x//y", "f/g"];
        let errors = parse_secret_paths(&list, '/').unwrap_err();
        assert_eq!(errors.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 3, 4]);
        assert!(
            errors[0]
                .to_string()
                .starts_with("entry 2: secret path \"bad\" has no folder")
        );
        let ok = parse_secret_paths(&["a/b", "c/d/e"], '/').unwrap();
        assert_eq!(ok[1].title(), "e");
        let errors = parse_folder_paths(&["a", "", "b/c", "1/2/3/4/5/6/7/8"], '/').unwrap_err();
        assert_eq!(errors.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(errors[0].error.kind, RefKind::Folder);
        let errors = parse_account_refs(&["s/a", "s", "s/a/x"], '/').unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(split_list(" a, ,b ,").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let p: SecretPath = serde_json::from_str(r#"" a / b ""#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""a/b""#);
        let e = serde_json::from_str::<SecretPath>(r#""a/b/c/d/e/f/g/h/t""#).unwrap_err();
        assert!(
            e.to_string()
                .contains("folder depth of 8, more than the maximum of 7"),
            "{e}"
        );
        assert!(serde_json::from_str::<AccountRef>(r#""a/b/c""#).is_err());
        let star = SecretPath::parse_with_separator("a/b*c", '*').unwrap();
        assert!(serde_json::to_string(&star).is_err());
    }

    #[test]
    fn env_sources() {
        let sp = |s: &str| s.parse::<SecretPath>().unwrap();
        assert_eq!(ValueRef::parse_source("a/b"), Ok(ValueRef::Secret(sp("a/b"))));
        assert_eq!(
            ValueRef::parse_source("secret:a/b"),
            Ok(ValueRef::Secret(sp("a/b")))
        );
        assert_eq!(
            ValueRef::parse_source("username: a/b"),
            Ok(ValueRef::SecretUsername(sp("a/b")))
        );
        assert_eq!(
            ValueRef::parse_source("account:sys/acct"),
            Ok(ValueRef::Account("sys/acct".parse().unwrap()))
        );
        assert!(
            ValueRef::parse_source("prod:eu/db")
                .unwrap_err()
                .contains("unknown source")
        );
        assert!(ValueRef::parse_source("fo:lder/x").is_err());
        assert_eq!(
            ValueRef::parse_source("folder/ti:tle"),
            Ok(ValueRef::Secret(sp("folder/ti:tle")))
        );
        assert!(
            ValueRef::parse_source("account:nosystem")
                .unwrap_err()
                .starts_with("managed account \"nosystem\"")
        );
        assert!(ValueRef::parse_source("title-only").is_err());
        assert!(
            ValueRef::parse_source("a/b/c/d/e/f/g/h/t")
                .unwrap_err()
                .contains("maximum of 7")
        );
    }
}
