//! The path-safety rule: which names from Password Safe (titles, folder names, system and
//! account names) and from the configuration may become file or directory names under the root.
//!
//! Every component of every path the agent writes is checked on its own. A component is
//! refused when it
//! - is empty, `.` or `..`, or starts with `..` (reserved for the agent's `..data` link and
//!   generation directories);
//! - contains `/`, `\`, NUL or any other control character (C0, DEL, C1);
//! - is longer than 255 bytes (the Linux `NAME_MAX`);
//! - is the first component under the root and starts with `.` (reserved for the agent's own
//!   entries `.ps-ready`, `.ps-result.json`, `.ps-bin`, ...).
//!
//! A refused component fails the output that needed it, with a message naming it; nothing is
//! renamed or encoded behind the user's back. Backslashes in a `FolderPath` returned by the API
//! are folder separators and are turned into `/` before the folder is split (see
//! [`split_api_folder`]).

use std::fmt;

/// Longest file name Linux accepts.
pub const NAME_MAX: usize = 255;

/// Why one path component was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    #[error("it is empty")]
    Empty,
    #[error("it is \".\" or \"..\"")]
    Dots,
    #[error("it starts with \"..\", which is reserved for the agent's generation entries")]
    DoubleDot,
    #[error("it starts with \".\" directly under the root, which is reserved for the agent's own files")]
    TopLevelDot,
    #[error("it contains '/'")]
    Slash,
    #[error("it contains '\\'")]
    Backslash,
    #[error("it contains NUL")]
    Nul,
    #[error("it contains the control character U+{0:04X}")]
    Control(u32),
    #[error("it is longer than {NAME_MAX} bytes")]
    TooLong,
}

/// Checks one path component. `top` is true for the component directly under the root.
pub fn check_component(name: &str, top: bool) -> Result<(), ComponentError> {
    if name.is_empty() {
        return Err(ComponentError::Empty);
    }
    if name == "." || name == ".." {
        return Err(ComponentError::Dots);
    }
    if name.starts_with("..") {
        return Err(ComponentError::DoubleDot);
    }
    if top && name.starts_with('.') {
        return Err(ComponentError::TopLevelDot);
    }
    for c in name.chars() {
        match c {
            '/' => return Err(ComponentError::Slash),
            '\\' => return Err(ComponentError::Backslash),
            '\0' => return Err(ComponentError::Nul),
            c if c.is_control() => return Err(ComponentError::Control(c as u32)),
            _ => {}
        }
    }
    if name.len() > NAME_MAX {
        return Err(ComponentError::TooLong);
    }
    Ok(())
}

/// A path under the root, every component checked by [`check_component`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SafePath(Vec<String>);

/// A refused path: which component and why. Display names the component with Rust escapes,
/// so NUL, newlines and other control characters are shown, never interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafePath {
    pub component: String,
    pub reason: ComponentError,
}

impl fmt::Display for UnsafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} cannot be a file or directory name: {}",
            self.component, self.reason
        )
    }
}

impl std::error::Error for UnsafePath {}

impl SafePath {
    /// Builds a path from components (the first is directly under the root).
    pub fn new<S: AsRef<str>>(components: &[S]) -> Result<SafePath, UnsafePath> {
        if components.is_empty() {
            return Err(UnsafePath {
                component: String::new(),
                reason: ComponentError::Empty,
            });
        }
        let mut out = Vec::with_capacity(components.len());
        for (i, c) in components.iter().enumerate() {
            let c = c.as_ref();
            check_component(c, i == 0).map_err(|reason| UnsafePath {
                component: c.to_owned(),
                reason,
            })?;
            out.push(c.to_owned());
        }
        Ok(SafePath(out))
    }

    /// Appends one component (never the first, so a leading `.` is allowed).
    pub fn join(&self, name: &str) -> Result<SafePath, UnsafePath> {
        check_component(name, false).map_err(|reason| UnsafePath {
            component: name.to_owned(),
            reason,
        })?;
        let mut v = self.0.clone();
        v.push(name.to_owned());
        Ok(SafePath(v))
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// The component directly under the root.
    pub fn top(&self) -> &str {
        &self.0[0]
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

impl fmt::Debug for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.join("/"))
    }
}

/// Splits a `FolderPath` as the API returns it: `\` and `/` both separate folders. Empty
/// segments are kept (and then refused by [`SafePath::new`]), so `a//b` is not silently
/// turned into `a/b`.
pub fn split_api_folder(folder: &str) -> Vec<String> {
    folder.replace('\\', "/").split('/').map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_components() {
        for ok in [
            "db", "password", "tls.crt", "a b", "ümlaut", ".env", "x..y", "a=b#c",
        ] {
            assert_eq!(check_component(ok, false), Ok(()), "{ok:?}");
        }
        for ok in ["db", "x..y", "SIPGE_DES"] {
            assert_eq!(check_component(ok, true), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn bad_components() {
        let cases: &[(&str, ComponentError)] = &[
            ("", ComponentError::Empty),
            (".", ComponentError::Dots),
            ("..", ComponentError::Dots),
            ("..data", ComponentError::DoubleDot),
            ("..2024_01_01", ComponentError::DoubleDot),
            ("a/b", ComponentError::Slash),
            ("../../etc/x", ComponentError::DoubleDot),
            ("x/../../etc", ComponentError::Slash),
            ("a\\b", ComponentError::Backslash),
            ("a\0b", ComponentError::Nul),
            ("line\nbreak", ComponentError::Control(0x0a)),
            ("tab\there", ComponentError::Control(0x09)),
            ("del\u{7f}", ComponentError::Control(0x7f)),
            ("c1\u{85}", ComponentError::Control(0x85)),
        ];
        for (bad, why) in cases {
            assert_eq!(check_component(bad, false).as_ref(), Err(why), "{bad:?}");
        }
        assert_eq!(
            check_component(&"x".repeat(256), false),
            Err(ComponentError::TooLong)
        );
        assert_eq!(check_component(&"x".repeat(255), false), Ok(()));
    }

    #[test]
    fn top_level_dot_is_reserved() {
        for bad in [".ps-ready", ".ps-result.json", ".ps-bin", ".hidden"] {
            assert_eq!(
                check_component(bad, true),
                Err(ComponentError::TopLevelDot),
                "{bad}"
            );
            assert_eq!(check_component(bad, false), Ok(()), "{bad}");
        }
    }

    #[test]
    fn safe_paths() {
        let p = SafePath::new(&["team", "db", "password"]).unwrap();
        assert_eq!(p.to_string(), "team/db/password");
        assert_eq!(p.top(), "team");
        assert!(p.join(".env").is_ok());
        let e = p.join("..").unwrap_err();
        assert!(
            e.to_string()
                .contains("\"..\" cannot be a file or directory name"),
            "{e}"
        );
        let e = SafePath::new(&["team", "a\nb"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"a\\nb\" cannot be a file or directory name: it contains the control character U+000A"
        );
        assert!(SafePath::new::<&str>(&[]).is_err());
        assert!(SafePath::new(&[".ps-ready"]).is_err());
    }

    #[test]
    fn api_folders_split_on_both_separators() {
        assert_eq!(split_api_folder("a\\b/c"), ["a", "b", "c"]);
        assert_eq!(split_api_folder("a//b"), ["a", "", "b"]);
        assert!(SafePath::new(&split_api_folder("a\\..\\..\\etc")).is_err());
    }
}
