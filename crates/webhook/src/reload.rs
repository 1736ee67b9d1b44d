//! Reloading files without a restart: the cluster configuration (`--config`) here, the serving
//! certificate and key in [`crate::tls`], both through the same [`ChangeDetector`].
//!
//! **Why polling.** Kubernetes updates ConfigMap and Secret volumes by writing a new directory
//! and atomically swapping the `..data` symlink; inotify on the file path misses that, and
//! inotify on the directory sees a burst of events. Polling `stat()` through the symlinks every
//! interval (default 1 s) costs a few microseconds, sees every kind of update (symlink swap,
//! rename over, in-place rewrite), and needs no platform-specific code.
//!
//! **Debounce.** A change is applied once the files' fingerprints have been the same on two
//! consecutive polls, so a writer that replaces the certificate and then the key is seen as
//! one change, not as a mismatched pair followed by a good one. A change is therefore applied
//! between one and two intervals after the last write.
//!
//! **Failure.** An unreadable or invalid new version is rejected: the previous one stays in
//! use, the error is logged and counted, readiness is unaffected, and the same files are not
//! retried until they change again.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::{
    config::{Config, ConfigError},
    metrics::Metrics,
};

/// The configuration in force, read once per admission request and swapped on reload.
pub type SharedConfig = Arc<ArcSwap<Config>>;

/// Default poll interval of file watchers.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of a file, seen through symlinks. `None` = missing/unreadable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}

/// Decides, poll after poll, when a set of files has changed and settled.
#[derive(Debug)]
pub struct ChangeDetector {
    paths: Vec<PathBuf>,
    applied: Vec<Option<Fingerprint>>,
    pending: Option<Vec<Option<Fingerprint>>>,
}

impl ChangeDetector {
    /// Starts from the files' current state, taken as already applied.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let applied = paths.iter().map(|p| fingerprint(p)).collect();
        Self {
            paths,
            applied,
            pending: None,
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Looks at the files once. Returns `true` when they differ from the applied state and have
    /// not changed since the previous poll; the new state then counts as applied, whatever the
    /// caller's reload makes of it.
    pub fn poll(&mut self) -> bool {
        let now: Vec<_> = self.paths.iter().map(|p| fingerprint(p)).collect();
        if now == self.applied {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.applied = now;
            self.pending = None;
            return true;
        }
        self.pending = Some(now);
        false
    }
}

/// Runs `on_change` every time `detector` reports a settled change, until the task is aborted.
pub fn spawn_watch<F>(mut detector: ChangeDetector, interval: Duration, mut on_change: F) -> JoinHandle<()>
where
    F: FnMut() + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if detector.poll() {
                on_change();
            }
        }
    })
}

/// Loads the configuration: the file when given, else the built-in defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => read_config(path),
        None => Ok(Config::default()),
    }
}

/// Reads, parses and validates a configuration file (the core only parses: it does no IO).
pub fn read_config(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Config::from_yaml(&text)
}

/// Re-reads `path` into `store`. An invalid file leaves `store` as it was. Logged and counted
/// either way.
pub fn reload_config(path: &Path, store: &ArcSwap<Config>, metrics: &Metrics) -> Result<(), ConfigError> {
    match read_config(path) {
        Ok(config) => {
            store.store(Arc::new(config));
            metrics.config_reload(true);
            tracing::info!(path = %path.display(), "configuration reloaded");
            Ok(())
        }
        Err(error) => {
            metrics.config_reload(false);
            tracing::error!(
                path = %path.display(),
                %error,
                "configuration reload rejected; keeping the previous configuration"
            );
            Err(error)
        }
    }
}

/// Watches the configuration file and reloads it into `store` on every settled change.
pub fn watch_config(
    path: PathBuf,
    store: SharedConfig,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> JoinHandle<()> {
    let detector = ChangeDetector::new(vec![path.clone()]);
    spawn_watch(detector, interval, move || {
        let _ = reload_config(&path, &store, &metrics);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_waits_for_files_to_settle() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "1").unwrap();
        std::fs::write(&b, "1").unwrap();
        let mut d = ChangeDetector::new(vec![a.clone(), b.clone()]);
        assert!(!d.poll(), "nothing changed");
        std::fs::write(&a, "22").unwrap();
        assert!(!d.poll(), "first sight of a change: wait one poll");
        std::fs::write(&b, "22").unwrap();
        assert!(!d.poll(), "still changing");
        assert!(d.poll(), "settled");
        assert!(!d.poll(), "applied");
        // A change and its reversal before the next poll is no change.
        std::fs::remove_file(&a).unwrap();
        assert!(!d.poll());
        assert!(d.poll(), "a missing file is a change too");
    }

    #[test]
    fn symlink_swaps_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("v1");
        let v2 = dir.path().join("v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("f"), "x").unwrap();
        std::fs::write(v2.join("f"), "x").unwrap();
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink("v1", &data).unwrap();
        std::os::unix::fs::symlink("..data/f", dir.path().join("f")).unwrap();
        let mut d = ChangeDetector::new(vec![dir.path().join("f")]);
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink("v2", &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        assert!(!d.poll());
        assert!(d.poll(), "same size and content, but a different file");
    }
}
