//! Secret, folder and managed-account references, validated with the real API's limits.
//!
//! Rules (shared by every parser here):
//! - the input is split on the separator (default `/`, any single character that is not
//!   whitespace, not a control character and not alphanumeric);
//! - every segment is whitespace-trimmed; an empty segment (`a//b`, a leading or trailing
//!   separator) is an error, never silently dropped;
//! - control characters (including NUL) are rejected anywhere;
//! - secrets: a folder path of 1–7 segments (the safe plus up to 6 subfolders) and a title; each
//!   folder name ≤ 256 characters, the folder path as sent ≤ 1798 characters, the title ≤ 256
//!   characters. A single segment is an error (there is no title), unlike the Go library which
//!   turns `X` into `X/X`;
//! - folders: 1–7 segments, same limits;
//! - managed accounts: exactly `system<sep>account`, system ≤ 128 and account ≤ 245 characters.
//!
//! Lengths are counted in Unicode scalar values (characters), like the server's .NET string
//! lengths for every character outside the astral planes.
//!
//! [`validate_secret_paths`] (and the folder/account variants) check a whole list and report
//! **every** invalid entry with its index; none is dropped.

use std::{fmt, str::FromStr};

/// The default separator between folders and title.
pub const DEFAULT_SEPARATOR: char = '/';
/// Maximum number of folder segments in a secret's folder path (safe + 6 subfolders).
pub const MAX_FOLDER_DEPTH: usize = 7;
/// Maximum length of one folder name.
pub const MAX_FOLDER_NAME_CHARS: usize = 256;
/// Maximum length of a whole folder path as sent in `path=` (7 × 256 + 6 separators).
pub const MAX_FOLDER_PATH_CHARS: usize = MAX_FOLDER_DEPTH * MAX_FOLDER_NAME_CHARS + MAX_FOLDER_DEPTH - 1;
/// Maximum length of a secret title.
pub const MAX_TITLE_CHARS: usize = 256;
/// Maximum length of a managed system name.
pub const MAX_SYSTEM_NAME_CHARS: usize = 128;
/// Maximum length of a managed account name.
pub const MAX_ACCOUNT_NAME_CHARS: usize = 245;

/// What kind of reference a [`PathError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// `folder/.../title`
    Secret,
    /// `folder/...`
    Folder,
    /// `system/account`
    ManagedAccount,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Secret => "secret path",
            PathKind::Folder => "folder path",
            PathKind::ManagedAccount => "managed account",
        })
    }
}

/// Why a reference is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathErrorKind {
    /// Empty or blank input.
    #[error("it is empty")]
    Empty,
    /// The separator is unusable.
    #[error(
        "separator {0:?} is not allowed (one character, not whitespace, a letter, a digit or a control character)"
    )]
    InvalidSeparator(char),
    /// A secret path without a folder (`title` alone).
    #[error("it has no folder: expected folder{0}...{0}title")]
    MissingFolder(char),
    /// Managed account reference with the wrong number of parts.
    #[error("expected exactly system{separator}account, found {found} part(s)")]
    AccountParts {
        /// Separator used.
        separator: char,
        /// Segments found.
        found: usize,
    },
    /// `a//b`, a leading or a trailing separator.
    #[error("segment {position} is empty")]
    EmptySegment {
        /// 1-based segment number.
        position: usize,
    },
    /// A control character (including NUL).
    #[error("segment {position} contains a control character")]
    ControlCharacter {
        /// 1-based segment number.
        position: usize,
    },
    /// More than 7 folder segments.
    #[error("folder depth {depth} exceeds the maximum of {max}")]
    TooDeep {
        /// Folder segments found.
        depth: usize,
        /// Limit.
        max: usize,
    },
    /// A folder name (or system/account name) is too long.
    #[error("{name} in segment {position} is {len} characters long, the maximum is {max}")]
    TooLong {
        /// `folder name`, `title`, `folder path`, `system name`, `account name`.
        name: &'static str,
        /// 1-based segment number (0 for the whole folder path).
        position: usize,
        /// Characters found.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// One invalid entry of a list, with its position and text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} #{} {input:?}: {reason}", index + 1)]
pub struct PathError {
    /// 0-based index in the list (the message shows it 1-based).
    pub index: usize,
    /// The entry as given.
    pub input: String,
    /// Which kind of reference.
    pub kind: PathKind,
    /// Why it is invalid.
    pub reason: PathErrorKind,
}

/// A validated folder path: 1–7 trimmed, non-empty segments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FolderPath {
    segments: Vec<String>,
    separator: char,
}

/// A validated `folder/.../title` reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretPath {
    folder: FolderPath,
    title: String,
}

/// A validated `system/account` managed-account reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountRef {
    system: String,
    account: String,
    separator: char,
}

fn check_separator(sep: char) -> Result<(), PathErrorKind> {
    if sep.is_whitespace() || sep.is_control() || sep.is_alphanumeric() {
        return Err(PathErrorKind::InvalidSeparator(sep));
    }
    Ok(())
}

/// Splits, trims and checks emptiness and control characters.
fn split(input: &str, sep: char) -> Result<Vec<String>, PathErrorKind> {
    check_separator(sep)?;
    let input = input.trim();
    if input.is_empty() {
        return Err(PathErrorKind::Empty);
    }
    let mut out = Vec::new();
    for (i, seg) in input.split(sep).enumerate() {
        let position = i + 1;
        let seg = seg.trim();
        if seg.is_empty() {
            return Err(PathErrorKind::EmptySegment { position });
        }
        if seg.chars().any(char::is_control) {
            return Err(PathErrorKind::ControlCharacter { position });
        }
        out.push(seg.to_owned());
    }
    Ok(out)
}

fn check_len(name: &'static str, position: usize, s: &str, max: usize) -> Result<(), PathErrorKind> {
    let len = s.chars().count();
    if len > max {
        return Err(PathErrorKind::TooLong {
            name,
            position,
            len,
            max,
        });
    }
    Ok(())
}

fn folder_from_segments(segments: Vec<String>, separator: char) -> Result<FolderPath, PathErrorKind> {
    if segments.len() > MAX_FOLDER_DEPTH {
        return Err(PathErrorKind::TooDeep {
            depth: segments.len(),
            max: MAX_FOLDER_DEPTH,
        });
    }
    for (i, seg) in segments.iter().enumerate() {
        check_len("folder name", i + 1, seg, MAX_FOLDER_NAME_CHARS)?;
    }
    let folder = FolderPath { segments, separator };
    check_len("folder path", 0, &folder.joined(), MAX_FOLDER_PATH_CHARS)?;
    Ok(folder)
}

impl FolderPath {
    /// Parses with a separator other than `/` (for names that contain `/`).
    pub fn parse_with_separator(input: &str, separator: char) -> Result<FolderPath, PathErrorKind> {
        folder_from_segments(split(input, separator)?, separator)
    }

    /// The trimmed folder names, safe first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The separator used in requests (`separator=` query parameter).
    pub fn separator(&self) -> char {
        self.separator
    }

    /// The folder path as sent in the `path=` query parameter.
    pub fn joined(&self) -> String {
        let mut sep = [0u8; 4];
        self.segments.join(&*self.separator.encode_utf8(&mut sep))
    }
}

impl fmt::Display for FolderPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined())
    }
}

impl FromStr for FolderPath {
    type Err = PathErrorKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FolderPath::parse_with_separator(s, DEFAULT_SEPARATOR)
    }
}

impl SecretPath {
    /// Parses `folder<sep>...<sep>title` with a separator other than `/`.
    pub fn parse_with_separator(input: &str, separator: char) -> Result<SecretPath, PathErrorKind> {
        let mut segments = split(input, separator)?;
        if segments.len() < 2 {
            return Err(PathErrorKind::MissingFolder(separator));
        }
        let position = segments.len();
        let title = segments.pop().unwrap_or_default();
        if segments.len() > MAX_FOLDER_DEPTH {
            return Err(PathErrorKind::TooDeep {
                depth: segments.len(),
                max: MAX_FOLDER_DEPTH,
            });
        }
        check_len("title", position, &title, MAX_TITLE_CHARS)?;
        let folder = folder_from_segments(segments, separator)?;
        Ok(SecretPath { folder, title })
    }

    /// Builds a reference from an already split folder and title (both validated).
    pub fn new(folder: FolderPath, title: &str) -> Result<SecretPath, PathErrorKind> {
        let position = folder.segments.len() + 1;
        let title = title.trim();
        if title.is_empty() {
            return Err(PathErrorKind::EmptySegment { position });
        }
        if title.chars().any(char::is_control) {
            return Err(PathErrorKind::ControlCharacter { position });
        }
        if title.contains(folder.separator) {
            return Err(PathErrorKind::InvalidSeparator(folder.separator));
        }
        check_len("title", position, title, MAX_TITLE_CHARS)?;
        Ok(SecretPath {
            folder,
            title: title.to_owned(),
        })
    }

    /// The folder part.
    pub fn folder(&self) -> &FolderPath {
        &self.folder
    }

    /// The title (trimmed).
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The separator.
    pub fn separator(&self) -> char {
        self.folder.separator
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.folder, self.folder.separator, self.title)
    }
}

impl FromStr for SecretPath {
    type Err = PathErrorKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretPath::parse_with_separator(s, DEFAULT_SEPARATOR)
    }
}

impl AccountRef {
    /// Parses `system<sep>account`.
    pub fn parse_with_separator(input: &str, separator: char) -> Result<AccountRef, PathErrorKind> {
        let mut parts = split(input, separator)?;
        if parts.len() != 2 {
            return Err(PathErrorKind::AccountParts {
                separator,
                found: parts.len(),
            });
        }
        let account = parts.pop().unwrap_or_default();
        let system = parts.pop().unwrap_or_default();
        check_len("system name", 1, &system, MAX_SYSTEM_NAME_CHARS)?;
        check_len("account name", 2, &account, MAX_ACCOUNT_NAME_CHARS)?;
        Ok(AccountRef {
            system,
            account,
            separator,
        })
    }

    /// Builds a reference from its two parts.
    pub fn new(system: &str, account: &str) -> Result<AccountRef, PathErrorKind> {
        let (system, account) = (system.trim(), account.trim());
        for (position, s) in [(1, system), (2, account)] {
            if s.is_empty() {
                return Err(PathErrorKind::EmptySegment { position });
            }
            if s.chars().any(char::is_control) {
                return Err(PathErrorKind::ControlCharacter { position });
            }
        }
        check_len("system name", 1, system, MAX_SYSTEM_NAME_CHARS)?;
        check_len("account name", 2, account, MAX_ACCOUNT_NAME_CHARS)?;
        Ok(AccountRef {
            system: system.to_owned(),
            account: account.to_owned(),
            separator: DEFAULT_SEPARATOR,
        })
    }

    /// The managed system name (`systemName=`).
    pub fn system(&self) -> &str {
        &self.system
    }

    /// The managed account name (`accountName=`).
    pub fn account(&self) -> &str {
        &self.account
    }
}

impl fmt::Display for AccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.system, self.separator, self.account)
    }
}

impl FromStr for AccountRef {
    type Err = PathErrorKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountRef::parse_with_separator(s, DEFAULT_SEPARATOR)
    }
}

fn validate_list<T>(
    list: &[&str],
    kind: PathKind,
    parse: impl Fn(&str) -> Result<T, PathErrorKind>,
) -> Result<Vec<T>, Vec<PathError>> {
    let mut ok = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (index, input) in list.iter().enumerate() {
        match parse(input) {
            Ok(v) => ok.push(v),
            Err(reason) => errors.push(PathError {
                index,
                input: (*input).to_owned(),
                kind,
                reason,
            }),
        }
    }
    if errors.is_empty() { Ok(ok) } else { Err(errors) }
}

/// Validates every `folder/.../title` entry (separator `/`). Either all are valid (returned in
/// order) or every invalid one is reported.
pub fn validate_secret_paths(list: &[&str]) -> Result<Vec<SecretPath>, Vec<PathError>> {
    validate_secret_paths_with_separator(list, DEFAULT_SEPARATOR)
}

/// [`validate_secret_paths`] with another separator.
pub fn validate_secret_paths_with_separator(
    list: &[&str],
    separator: char,
) -> Result<Vec<SecretPath>, Vec<PathError>> {
    validate_list(list, PathKind::Secret, |s| {
        SecretPath::parse_with_separator(s, separator)
    })
}

/// Validates every folder path entry; reports every invalid one.
pub fn validate_folder_paths(list: &[&str], separator: char) -> Result<Vec<FolderPath>, Vec<PathError>> {
    validate_list(list, PathKind::Folder, |s| {
        FolderPath::parse_with_separator(s, separator)
    })
}

/// Validates every `system/account` entry; reports every invalid one.
pub fn validate_account_refs(list: &[&str], separator: char) -> Result<Vec<AccountRef>, Vec<PathError>> {
    validate_list(list, PathKind::ManagedAccount, |s| {
        AccountRef::parse_with_separator(s, separator)
    })
}

/// Normalizes a `FolderPath` as returned by the API: backslashes become `/`.
pub(crate) fn normalize_response_folder(raw: &str) -> String {
    raw.replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(c: char, count: usize) -> String {
        std::iter::repeat_n(c, count).collect()
    }

    #[test]
    fn limits_are_the_servers() {
        assert_eq!(MAX_FOLDER_PATH_CHARS, 1798);
    }

    #[test]
    fn parses_and_trims() {
        let p: SecretPath = "  team-a / db /  password ".parse().unwrap();
        assert_eq!(p.folder().segments(), ["team-a", "db"]);
        assert_eq!(p.title(), "password");
        assert_eq!(p.folder().joined(), "team-a/db");
        assert_eq!(p.to_string(), "team-a/db/password");
        let p: SecretPath = "safe/title".parse().unwrap();
        assert_eq!(p.folder().joined(), "safe");
    }

    #[test]
    fn separator_handling() {
        let p = SecretPath::parse_with_separator("a/b*c/d*e f", '*').unwrap();
        assert_eq!(p.folder().segments(), ["a/b", "c/d"]);
        assert_eq!(p.title(), "e f");
        assert_eq!(p.folder().joined(), "a/b*c/d");
        assert_eq!(p.separator(), '*');
        assert_eq!(p.to_string(), "a/b*c/d*e f");
        for bad in [' ', '\t', 'a', '1', '\0'] {
            assert_eq!(
                SecretPath::parse_with_separator("x y", bad),
                Err(PathErrorKind::InvalidSeparator(bad))
            );
        }
        // With '*' a '/' path is a single segment: no folder.
        assert_eq!(
            SecretPath::parse_with_separator("a/b", '*'),
            Err(PathErrorKind::MissingFolder('*'))
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!("".parse::<SecretPath>(), Err(PathErrorKind::Empty));
        assert_eq!("   ".parse::<SecretPath>(), Err(PathErrorKind::Empty));
        assert_eq!(
            "title".parse::<SecretPath>(),
            Err(PathErrorKind::MissingFolder('/'))
        );
        assert_eq!(
            "a//b".parse::<SecretPath>(),
            Err(PathErrorKind::EmptySegment { position: 2 })
        );
        assert_eq!(
            "/a/b".parse::<SecretPath>(),
            Err(PathErrorKind::EmptySegment { position: 1 })
        );
        assert_eq!(
            "a/b/".parse::<SecretPath>(),
            Err(PathErrorKind::EmptySegment { position: 3 })
        );
        assert_eq!(
            "a/ /b".parse::<SecretPath>(),
            Err(PathErrorKind::EmptySegment { position: 2 })
        );
        assert_eq!(
            "a/b\0c".parse::<SecretPath>(),
            Err(PathErrorKind::ControlCharacter { position: 2 })
        );
        assert_eq!(
            "a\nx/b".parse::<SecretPath>(),
            Err(PathErrorKind::ControlCharacter { position: 1 })
        );
    }

    #[test]
    fn depth_limit() {
        let seven = "1/2/3/4/5/6/7/title";
        assert_eq!(seven.parse::<SecretPath>().unwrap().folder().segments().len(), 7);
        assert_eq!(
            "1/2/3/4/5/6/7/8/title".parse::<SecretPath>(),
            Err(PathErrorKind::TooDeep { depth: 8, max: 7 })
        );
        assert!("1/2/3/4/5/6/7".parse::<FolderPath>().is_ok());
        assert_eq!(
            "1/2/3/4/5/6/7/8".parse::<FolderPath>(),
            Err(PathErrorKind::TooDeep { depth: 8, max: 7 })
        );
    }

    #[test]
    fn length_limits() {
        let ok_title = format!("f/{}", n('t', 256));
        assert!(ok_title.parse::<SecretPath>().is_ok());
        assert_eq!(
            format!("f/{}", n('t', 257)).parse::<SecretPath>(),
            Err(PathErrorKind::TooLong {
                name: "title",
                position: 2,
                len: 257,
                max: 256
            })
        );
        // Characters, not bytes.
        assert!(format!("f/{}", n('é', 256)).parse::<SecretPath>().is_ok());
        assert_eq!(
            format!("{}/t", n('f', 257)).parse::<SecretPath>(),
            Err(PathErrorKind::TooLong {
                name: "folder name",
                position: 1,
                len: 257,
                max: 256
            })
        );
        // 7 × 256 + 6 separators = 1798: the maximum, accepted.
        let max_folder = vec![n('f', 256); 7].join("/");
        assert_eq!(max_folder.chars().count(), 1798);
        assert!(format!("{max_folder}/t").parse::<SecretPath>().is_ok());
        assert!(max_folder.parse::<FolderPath>().is_ok());
        // Non-ASCII separators count as one character.
        let sep_folder = vec![n('f', 256); 7].join("→");
        assert!(FolderPath::parse_with_separator(&sep_folder, '→').is_ok());
    }

    #[test]
    fn accounts() {
        let a: AccountRef = " db-prod / svc_app ".parse().unwrap();
        assert_eq!((a.system(), a.account()), ("db-prod", "svc_app"));
        assert_eq!(a.to_string(), "db-prod/svc_app");
        let a: AccountRef = r"win01/CORP\svc".parse().unwrap();
        assert_eq!(a.account(), r"CORP\svc");
        assert_eq!(
            "x".parse::<AccountRef>(),
            Err(PathErrorKind::AccountParts {
                separator: '/',
                found: 1
            })
        );
        assert_eq!(
            "a/b/c".parse::<AccountRef>(),
            Err(PathErrorKind::AccountParts {
                separator: '/',
                found: 3
            })
        );
        assert_eq!(
            "a//c".parse::<AccountRef>(),
            Err(PathErrorKind::EmptySegment { position: 2 })
        );
        assert!(
            format!("{}/{}", n('s', 128), n('a', 245))
                .parse::<AccountRef>()
                .is_ok()
        );
        assert_eq!(
            format!("{}/a", n('s', 129)).parse::<AccountRef>(),
            Err(PathErrorKind::TooLong {
                name: "system name",
                position: 1,
                len: 129,
                max: 128
            })
        );
        assert_eq!(
            format!("s/{}", n('a', 246)).parse::<AccountRef>(),
            Err(PathErrorKind::TooLong {
                name: "account name",
                position: 2,
                len: 246,
                max: 245
            })
        );
        assert_eq!(
            AccountRef::parse_with_separator("a|b", '|').unwrap().to_string(),
            "a|b"
        );
        assert!(AccountRef::new("sys", "acct").is_ok());
        assert_eq!(
            AccountRef::new("", "acct"),
            Err(PathErrorKind::EmptySegment { position: 1 })
        );
    }

    #[test]
    fn every_invalid_entry_is_reported() {
        let list = ["a/b", "bad", "c/d/e", "", "x//y", "f/g"];
        let errors = validate_secret_paths(&list).unwrap_err();
        let indexes: Vec<usize> = errors.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [1, 3, 4]);
        assert_eq!(errors[0].input, "bad");
        assert_eq!(
            errors[0].to_string(),
            "invalid secret path #2 \"bad\": it has no folder: expected folder/.../title"
        );
        let ok = validate_secret_paths(&["a/b", "c/d/e"]).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].title(), "e");
        assert_eq!(validate_secret_paths(&[]).unwrap(), vec![]);

        let errors = validate_folder_paths(&["a", "", "b/c", "1/2/3/4/5/6/7/8"], '/').unwrap_err();
        assert_eq!(errors.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(errors[0].kind, PathKind::Folder);
        let errors = validate_account_refs(&["s/a", "s", "s/a/x"], '/').unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[1].to_string().starts_with("invalid managed account #3"));
    }

    #[test]
    fn new_from_parts() {
        let f: FolderPath = "a/b".parse().unwrap();
        assert_eq!(SecretPath::new(f.clone(), " t ").unwrap().to_string(), "a/b/t");
        assert_eq!(
            SecretPath::new(f.clone(), "x/y"),
            Err(PathErrorKind::InvalidSeparator('/'))
        );
        assert_eq!(
            SecretPath::new(f, " "),
            Err(PathErrorKind::EmptySegment { position: 3 })
        );
    }

    #[test]
    fn response_folder_normalization() {
        assert_eq!(normalize_response_folder(r"safe\team\db"), "safe/team/db");
        assert_eq!(normalize_response_folder("safe/team"), "safe/team");
        assert_eq!(normalize_response_folder(""), "");
    }
}
