//! References to secrets, folders and managed accounts. Their grammar and Password Safe's limits
//! are defined once, in `inject_api::refs`, and shared with the webhook that admits them: the
//! client takes only these already-valid types.

pub use inject_api::refs::{
    AccountRef, DEFAULT_SEPARATOR, FolderPath, ListError, MAX_ACCOUNT_NAME_LEN, MAX_FOLDER_DEPTH,
    MAX_FOLDER_NAME_LEN, MAX_FOLDER_PATH_LEN, MAX_SYSTEM_NAME_LEN, MAX_TITLE_LEN, RefError, RefErrorKind,
    RefKind, SecretPath, parse_account_refs, parse_folder_paths, parse_secret_paths,
};

/// Normalizes a `FolderPath` as returned by the API: backslashes become `/`.
pub(crate) fn normalize_response_folder(raw: &str) -> String {
    raw.replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_folder_normalization() {
        assert_eq!(normalize_response_folder(r"safe\team\db"), "safe/team/db");
        assert_eq!(normalize_response_folder("safe/team"), "safe/team");
        assert_eq!(normalize_response_folder(""), "");
    }
}
