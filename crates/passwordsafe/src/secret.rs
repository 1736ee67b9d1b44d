//! Secrets, their values, and decoding of the API's response shapes.

use std::fmt;

use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;
use serde_json::Value;

use crate::path::normalize_response_folder;

/// A secret value (password, text or file content). `Debug` and `Display` print `[redacted]`;
/// read it with [`SecretValue::expose_bytes`] or [`SecretValue::expose_str`]. Zeroed on drop.
#[derive(Clone)]
pub struct SecretValue(SecretSlice<u8>);

impl SecretValue {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes.into())
    }

    /// The raw bytes.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The value as UTF-8 text, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(self.expose_bytes()).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.expose_bytes().len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        SecretValue::new(s.into_bytes())
    }
}

impl From<Vec<u8>> for SecretValue {
    fn from(v: Vec<u8>) -> Self {
        SecretValue::new(v)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The kind of a Secrets Safe secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// `SecretType: Credential`; the value is the password.
    Credential {
        /// `Username` (may be empty).
        username: String,
    },
    /// `SecretType: Text`; the value is the text.
    Text,
    /// `SecretType: File`; the value is the downloaded content.
    File {
        /// `FileName`.
        file_name: String,
    },
}

/// A Secrets Safe secret with its value.
#[derive(Clone, Debug)]
pub struct Secret {
    /// `Title`.
    pub title: String,
    /// `FolderPath`, with `\` normalized to `/`.
    pub folder_path: String,
    /// Credential, text or file.
    pub kind: SecretKind,
    /// The value (password, text or file content).
    pub value: SecretValue,
    /// `Id` (a GUID).
    pub id: String,
    /// The API object as returned, without `Password` (the agent writes it as `<title>_Metadata`).
    pub metadata: Value,
}

/// A managed account's released password.
#[derive(Clone, Debug)]
pub struct ManagedCredential {
    /// Managed system name.
    pub system: String,
    /// Managed account name.
    pub account: String,
    /// The password.
    pub password: SecretValue,
}

/// The user the session runs as (`SignAppIn` response).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SignedInUser {
    /// `UserId`.
    #[serde(rename = "UserId")]
    pub user_id: Option<i64>,
    /// `UserName`.
    #[serde(rename = "UserName")]
    pub user_name: Option<String>,
    /// `Name`.
    #[serde(rename = "Name")]
    pub name: Option<String>,
    /// `EmailAddress`.
    #[serde(rename = "EmailAddress")]
    pub email_address: Option<String>,
}

/// A secret object as listed, before its value is resolved.
#[derive(Debug)]
pub(crate) struct RawSecret {
    pub id: String,
    pub title: String,
    pub folder_path: String,
    pub kind: SecretKind,
    /// `Password`, for credential and text secrets.
    pub password: Option<SecretValue>,
    pub metadata: Value,
}

/// Decodes a `GET secrets-safe/secrets` body: a bare array (3.0, 3.1) or `{TotalCount, Data}`
/// (3.2). Returns the objects and the total count when the wrapper gave one.
pub(crate) fn decode_secret_list(body: &[u8]) -> Result<(Vec<RawSecret>, Option<u64>), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON ({})", e.classify_name()))?;
    let (items, total) = match v {
        Value::Array(items) => (items, None),
        Value::Object(mut map) => {
            let data = take_ci(&mut map, "Data").ok_or("object without a Data array")?;
            let Value::Array(items) = data else {
                return Err("Data is not an array".to_owned());
            };
            let total = take_ci(&mut map, "TotalCount").and_then(|t| t.as_u64());
            (items, total)
        }
        _ => return Err("expected an array or a {TotalCount, Data} object".to_owned()),
    };
    let secrets = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| raw_secret(item, i))
        .collect::<Result<_, _>>()?;
    Ok((secrets, total))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Removes a key matched case-insensitively.
fn take_ci(map: &mut serde_json::Map<String, Value>, key: &str) -> Option<Value> {
    let k = map.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    map.remove(&k)
}

fn get_str(map: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

fn raw_secret(item: Value, index: usize) -> Result<RawSecret, String> {
    let Value::Object(mut map) = item else {
        return Err(format!("element {index} is not an object"));
    };
    // Take the value out first so the metadata never holds it.
    let password = match take_ci(&mut map, "Password") {
        Some(Value::String(s)) => Some(SecretValue::from(s)),
        Some(Value::Null) | None => None,
        Some(_) => return Err(format!("element {index}: Password is not a string")),
    };
    let id = get_str(&map, "Id").ok_or_else(|| format!("element {index} has no Id"))?;
    let title = get_str(&map, "Title").ok_or_else(|| format!("element {index} has no Title"))?;
    let folder_path = get_str(&map, "FolderPath")
        .map(|f| normalize_response_folder(&f))
        .unwrap_or_default();
    let secret_type = get_str(&map, "SecretType").unwrap_or_else(|| "Credential".to_owned());
    let kind = if secret_type.eq_ignore_ascii_case("file") {
        SecretKind::File {
            file_name: get_str(&map, "FileName").unwrap_or_default(),
        }
    } else if secret_type.eq_ignore_ascii_case("text") {
        SecretKind::Text
    } else if secret_type.eq_ignore_ascii_case("credential") {
        SecretKind::Credential {
            username: get_str(&map, "Username").unwrap_or_default(),
        }
    } else {
        return Err(format!("element {index} has an unknown SecretType"));
    };
    Ok(RawSecret {
        id,
        title,
        folder_path,
        kind,
        password,
        metadata: Value::Object(map),
    })
}

/// Unquotes a `GET Credentials/{id}` body, which must be a JSON string. Anything else is an error
/// (never an empty password). The message never holds the body.
pub(crate) fn decode_credentials(body: &[u8]) -> Result<SecretValue, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::String(s)) => Ok(SecretValue::from(s)),
        Ok(_) => Err("body is JSON but not a string".to_owned()),
        Err(_) => Err("body is not a JSON string".to_owned()),
    }
}

/// Reads the request ID from a `POST Requests` body: a bare integer (or, leniently, a string
/// holding one).
pub(crate) fn decode_request_id(body: &[u8]) -> Result<u64, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| "request ID is not a positive integer".to_owned()),
        Ok(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| "request ID is not an integer".to_owned()),
        _ => Err("body is not a request ID".to_owned()),
    }
}

/// The IDs of a managed account from a `GET ManagedAccounts` body: one object, or an array from
/// which the entry matching system and account (case-insensitively) is taken.
pub(crate) fn decode_managed_account(
    body: &[u8],
    system: &str,
    account: &str,
) -> Result<Option<(i64, i64)>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "body is not JSON".to_owned())?;
    let ids = |o: &serde_json::Map<String, Value>| -> Option<(i64, i64)> {
        let get = |k: &str| {
            o.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .and_then(|(_, v)| v.as_i64())
        };
        Some((get("SystemId")?, get("AccountId")?))
    };
    let matches = |o: &serde_json::Map<String, Value>| {
        let eq = |k: &str, want: &str| get_str(o, k).is_some_and(|s| s.eq_ignore_ascii_case(want));
        eq("SystemName", system) && eq("AccountName", account)
    };
    match v {
        Value::Object(o) => ids(&o)
            .map(Some)
            .ok_or_else(|| "object without SystemId/AccountId".to_owned()),
        Value::Array(items) => {
            let objs: Vec<_> = items.iter().filter_map(Value::as_object).collect();
            let chosen =
                objs.iter()
                    .find(|o| matches(o))
                    .or(if objs.len() == 1 { objs.first() } else { None });
            match chosen {
                Some(o) => ids(o)
                    .map(Some)
                    .ok_or_else(|| "entry without SystemId/AccountId".to_owned()),
                None => Ok(None),
            }
        }
        _ => Err("expected an object or an array".to_owned()),
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares secret bytes without ever printing them.
    #[track_caller]
    fn assert_value(v: &SecretValue, expected: &[u8]) {
        assert!(
            v.expose_bytes() == expected,
            "secret value differs from the expected one (not shown)"
        );
    }

    const V31: &str = r#"[{"Id":"0f0e","Title":"db","Description":"d","Username":"app","Password":"s3cr3t!",
        "SecretType":"Credential","FolderPath":"team-a\\prod","Folder":"prod","OwnerId":1,"Text":null}]"#;

    #[test]
    fn decodes_array_shape() {
        let (list, total) = decode_secret_list(V31.as_bytes()).unwrap();
        assert_eq!(total, None);
        assert_eq!(list.len(), 1);
        let s = &list[0];
        assert_eq!(
            (s.id.as_str(), s.title.as_str(), s.folder_path.as_str()),
            ("0f0e", "db", "team-a/prod")
        );
        assert_eq!(
            s.kind,
            SecretKind::Credential {
                username: "app".into()
            }
        );
        assert_value(s.password.as_ref().unwrap(), b"s3cr3t!");
        let meta = serde_json::to_string(&s.metadata).unwrap();
        assert!(!meta.contains("s3cr3t"));
        assert!(s.metadata.get("Password").is_none());
        assert_eq!(s.metadata["Description"], "d");
        assert_eq!(
            s.metadata["FolderPath"], "team-a\\prod",
            "metadata stays as returned"
        );
    }

    #[test]
    fn decodes_v32_wrapper() {
        let body = r#"{"TotalCount":3,"Data":[
            {"Id":"1","Title":"t","SecretType":"TEXT","Password":"hello","FolderPath":"a/b"},
            {"Id":"2","Title":"f","SecretType":"file","FileName":"cert.pem","FolderPath":"a"}]}"#;
        let (list, total) = decode_secret_list(body.as_bytes()).unwrap();
        assert_eq!(total, Some(3));
        assert_eq!(list[0].kind, SecretKind::Text);
        assert_value(list[0].password.as_ref().unwrap(), b"hello");
        assert_eq!(
            list[1].kind,
            SecretKind::File {
                file_name: "cert.pem".into()
            }
        );
        assert!(list[1].password.is_none());
        let (empty, _) = decode_secret_list(br#"{"TotalCount":0,"Data":[]}"#).unwrap();
        assert!(empty.is_empty());
        assert!(decode_secret_list(b"[]").unwrap().0.is_empty());
    }

    #[test]
    fn rejects_bad_shapes_without_echoing() {
        for body in [
            &b"nope"[..],
            b"{}",
            b"42",
            br#"{"Data":{}}"#,
            br#"[1]"#,
            br#"[{"Title":"x"}]"#,
        ] {
            assert!(decode_secret_list(body).is_err());
        }
        let e =
            decode_secret_list(br#"[{"Id":"1","Title":"t","SecretType":"Weird","Password":"TOPSECRET"}]"#)
                .unwrap_err();
        assert!(!e.contains("TOPSECRET"));
    }

    #[test]
    fn credentials_unquoting() {
        assert_value(&decode_credentials(br#""P@ss\"word""#).unwrap(), b"P@ss\"word");
        assert_value(
            &decode_credentials(br#""a\\b\u00e9\n""#).unwrap(),
            "a\\bé\n".as_bytes(),
        );
        assert_value(&decode_credentials(b" \"x\" \n").unwrap(), b"x");
        assert_value(&decode_credentials(br#""""#).unwrap(), b"");
        for bad in [
            &b"plain"[..],
            b"",
            b"\"unterminated",
            b"42",
            b"null",
            b"{\"a\":1}",
            b"\xff",
        ] {
            let e = decode_credentials(bad).unwrap_err();
            assert!(!e.contains("plain") && !e.contains("unterminated"));
        }
    }

    #[test]
    fn request_ids() {
        assert_eq!(decode_request_id(b"124"), Ok(124));
        assert_eq!(decode_request_id(b"\"77\""), Ok(77));
        assert!(decode_request_id(b"-1").is_err());
        assert!(decode_request_id(b"x").is_err());
    }

    #[test]
    fn managed_account_shapes() {
        let one = br#"{"SystemId":3,"AccountId":9,"SystemName":"db","AccountName":"svc"}"#;
        assert_eq!(decode_managed_account(one, "db", "svc"), Ok(Some((3, 9))));
        let many = br#"[{"SystemId":1,"AccountId":2,"SystemName":"db","AccountName":"other"},
                        {"SystemId":3,"AccountId":9,"SystemName":"DB","AccountName":"SVC"}]"#;
        assert_eq!(decode_managed_account(many, "db", "svc"), Ok(Some((3, 9))));
        assert_eq!(decode_managed_account(b"[]", "db", "svc"), Ok(None));
        assert!(decode_managed_account(br#"{"SystemId":3}"#, "db", "svc").is_err());
    }

    #[test]
    fn secret_value_is_redacted() {
        let v = SecretValue::from("hunter2".to_owned());
        assert_eq!(format!("{v}"), "[redacted]");
        assert_eq!(format!("{v:?}"), "[redacted]");
        let c = ManagedCredential {
            system: "s".into(),
            account: "a".into(),
            password: v.clone(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let s = Secret {
            title: "t".into(),
            folder_path: "f".into(),
            kind: SecretKind::Text,
            value: v,
            id: "1".into(),
            metadata: Value::Null,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.value.expose_str(), Some("hunter2"));
    }

    #[test]
    fn signed_in_user() {
        let u: SignedInUser = serde_json::from_str(
            r#"{"UserId":1911,"SID":null,"EmailAddress":null,"UserName":"SPGEDB01","Name":"SPGEDB01"}"#,
        )
        .unwrap();
        assert_eq!(u.user_id, Some(1911));
        assert_eq!(u.user_name.as_deref(), Some("SPGEDB01"));
    }
}
