//! The subcommands that need no Password Safe: `exec` (env delivery), `copy-self`, `ready`.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs::{self, OpenOptions},
    io,
    os::unix::{
        fs::{OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
};

use inject_api::{env as vars, layout, names};

use crate::{AgentError, exit};

fn failed(message: String) -> AgentError {
    AgentError::Exec {
        message,
        code: exit::FAILED,
    }
}

/// Which env file `exec` reads: `--env-file`, else `<root>/..data/.ps-env` with the root from
/// `--root`, `PS_AGENT_ROOT`, the directory above `.ps-bin/` when this binary runs from there
/// (as copied by `copy-self`), or the default mount path.
pub fn env_file_path(env_file: Option<PathBuf>, root: Option<PathBuf>) -> PathBuf {
    if let Some(f) = env_file {
        return f;
    }
    let root = root
        .or_else(|| {
            std::env::var_os(vars::ROOT_OVERRIDE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let bin_dir = exe.parent()?;
            (bin_dir.file_name()? == layout::BIN_DIR).then(|| bin_dir.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| PathBuf::from(layout::DEFAULT_MOUNT_PATH));
    root.join(layout::DATA_LINK).join(layout::ENV_FILE)
}

/// Reads the env file: a JSON object of variable name → string value.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, AgentError> {
    let bytes = fs::read(path).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (has `ps-agent fetch` run and written env variables into this volume? set --env-file or --root if it \
             is elsewhere)"
        } else {
            ""
        };
        failed(format!("exec: cannot read the env file {}: {e}{hint}", path.display()))
    })?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json's message names a line and column, never the content.
        failed(format!(
            "exec: the env file {} is not a JSON object of strings (line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    for (k, v) in &map {
        if names::validate_env_name(k).is_err() {
            return Err(failed(format!(
                "exec: the env file {} holds an invalid variable name {k:?}",
                path.display()
            )));
        }
        if v.contains('\0') {
            return Err(failed(format!(
                "exec: the value of {k} in {} contains NUL",
                path.display()
            )));
        }
    }
    Ok(map)
}

/// `exec -- CMD ARGS...`: replaces this process with CMD, the env file's variables added to the
/// environment. Returns only on failure.
pub fn exec(
    env_file: Option<PathBuf>,
    root: Option<PathBuf>,
    command: Vec<OsString>,
) -> Result<(), AgentError> {
    let path = env_file_path(env_file, root);
    let env = read_env_file(&path)?;
    let (program, args) = command.split_first().ok_or_else(|| AgentError::Exec {
        message: "exec: no command given".into(),
        code: exit::CONFIG,
    })?;
    tracing::debug!(variables = env.len(), program = %program.to_string_lossy(), "exec");
    let err = std::process::Command::new(program).args(args).envs(&env).exec();
    let code = match err.kind() {
        io::ErrorKind::NotFound => exit::EXEC_NOT_FOUND,
        _ => exit::EXEC_NOT_EXECUTABLE,
    };
    Err(AgentError::Exec {
        message: format!("exec: cannot run {}: {err}", program.to_string_lossy()),
        code,
    })
}

/// `copy-self DIR`: writes this binary to `DIR/ps-agent` with mode 0555 (temporary file, fsync,
/// rename), so app containers can run `exec` without it in their image.
pub fn copy_self(dir: &Path) -> Result<(), AgentError> {
    let exe =
        std::env::current_exe().map_err(|e| failed(format!("copy-self: cannot find this binary: {e}")))?;
    fs::create_dir_all(dir)
        .map_err(|e| failed(format!("copy-self: cannot create {}: {e}", dir.display())))?;
    let dest = dir.join(layout::BIN_NAME);
    let tmp = dir.join(format!(".{}.{:08x}.tmp", layout::BIN_NAME, fastrand::u32(..)));
    let r = (|| -> io::Result<()> {
        let mut src = fs::File::open(&exe)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)?;
        io::copy(&mut src, &mut out)?;
        out.set_permissions(fs::Permissions::from_mode(0o555))?;
        out.sync_all()?;
        fs::rename(&tmp, &dest)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(failed(format!("copy-self: cannot write {}: {e}", dest.display())));
    }
    tracing::info!(path = %dest.display(), "copied ps-agent");
    Ok(())
}

/// `ready --root DIR`: exit 0 when `<root>/.ps-ready` exists.
pub fn ready(root: &Path) -> Result<(), AgentError> {
    let f = root.join(layout::READY_FILE);
    if f.exists() {
        Ok(())
    } else {
        Err(failed(format!("not ready: {} does not exist yet", f.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env");
        fs::write(&p, r#"{"A":"1","B_2":"x y"}"#).unwrap();
        assert_eq!(read_env_file(&p).unwrap().len(), 2);
        fs::write(&p, r#"{"A-B":"1"}"#).unwrap();
        assert!(
            read_env_file(&p)
                .unwrap_err()
                .to_string()
                .contains("invalid variable name")
        );
        fs::write(&p, r#"{"A":"SEKRIT"#).unwrap();
        let e = read_env_file(&p).unwrap_err().to_string();
        assert!(e.contains("not a JSON object") && !e.contains("SEKRIT"), "{e}");
        let e = read_env_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the env file"), "{e}");
    }

    #[test]
    fn env_file_location() {
        assert_eq!(
            env_file_path(Some("/x/e".into()), Some("/r".into())),
            Path::new("/x/e")
        );
        assert_eq!(
            env_file_path(None, Some("/r".into())),
            Path::new("/r/..data/.ps-env")
        );
    }

    #[test]
    fn ready_checks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ready(dir.path()).is_err());
        fs::write(dir.path().join(layout::READY_FILE), "").unwrap();
        assert!(ready(dir.path()).is_ok());
    }
}
