//! Rules for names that become file names or environment variables. Shared by the webhook
//! (which rejects bad annotations at admission) and the agent (which re-checks before writing).

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than 253 characters")]
    TooLong(String),
    #[error("name {0:?} must not start with '.' (names starting with '.' are reserved for the agent)")]
    LeadingDot(String),
    #[error(
        "name {0:?} contains {1:?}, which is not allowed in a file name (use letters, digits, '-', '_' and '.')"
    )]
    BadChar(String, char),
    #[error("environment variable name {0:?} must match [A-Za-z_][A-Za-z0-9_]*")]
    BadEnvName(String),
}

/// A file or directory name written directly under the agent's root: one path component of
/// letters, digits, `-`, `_` and `.`, not starting with `.` (so never `.`/`..`, never one of
/// the agent's own `..data`/`.ps-*` entries), at most 253 bytes.
pub fn validate_output_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 253 {
        return Err(NameError::TooLong(name.to_owned()));
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot(name.to_owned()));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(NameError::BadChar(name.to_owned(), c)),
        None => Ok(()),
    }
}

/// A POSIX-portable environment variable name.
pub fn validate_env_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(NameError::BadEnvName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        for good in ["db", "tls.crt", "app-config_v2", "A.B"] {
            assert_eq!(validate_output_name(good), Ok(()), "{good}");
        }
        assert_eq!(validate_output_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_output_name(".."),
            Err(NameError::LeadingDot(_))
        ));
        assert!(matches!(
            validate_output_name("..data"),
            Err(NameError::LeadingDot(_))
        ));
        assert!(matches!(
            validate_output_name("a/b"),
            Err(NameError::BadChar(_, '/'))
        ));
        assert!(matches!(
            validate_output_name("a\\b"),
            Err(NameError::BadChar(_, '\\'))
        ));
        assert!(matches!(
            validate_output_name("a\u{0}"),
            Err(NameError::BadChar(_, '\0'))
        ));
        assert!(matches!(
            validate_output_name("é"),
            Err(NameError::BadChar(_, 'é'))
        ));
        assert!(matches!(
            validate_output_name(&"x".repeat(254)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn env_names() {
        for good in ["A", "_x", "DB_PASSWORD_2"] {
            assert_eq!(validate_env_name(good), Ok(()), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert!(validate_env_name(bad).is_err(), "{bad}");
        }
    }
}
