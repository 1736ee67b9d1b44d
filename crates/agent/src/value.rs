//! [`Sensitive`]: bytes that may hold a secret. `Debug` never shows them; zeroed on drop.

use std::fmt;

use secrecy::{ExposeSecret, SecretSlice};

/// Bytes that may be (or contain) a secret value: fetched values and everything rendered from
/// them. Read them with [`Sensitive::expose`]; `Debug` prints only the length.
#[derive(Clone)]
pub struct Sensitive(SecretSlice<u8>);

impl Sensitive {
    pub fn new(bytes: Vec<u8>) -> Sensitive {
        Sensitive(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The bytes as UTF-8, if they are.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(self.expose()).ok()
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Sensitive {
    fn from(s: String) -> Self {
        Sensitive::new(s.into_bytes())
    }
}

impl From<&str> for Sensitive {
    fn from(s: &str) -> Self {
        Sensitive::new(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Sensitive {
    fn from(v: Vec<u8>) -> Self {
        Sensitive::new(v)
    }
}

impl PartialEq for Sensitive {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Sensitive {}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted, {} bytes]", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Sensitive::from("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted, 7 bytes]");
        assert_eq!(s.expose_str(), Some("hunter2"));
    }
}
