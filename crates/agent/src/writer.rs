//! Atomic generations under the root, Kubernetes' atomic-writer pattern:
//!
//! ```text
//! <root>/..2025_01_02_03_04_05.123456789_1a2b/   one generation (all files of one run)
//! <root>/..data -> ..2025_01_02_03_04_05.123456789_1a2b
//! <root>/<name> -> ..data/<name>                  one link per top-level entry
//! <root>/.ps-ready  <root>/.ps-result.json        the agent's own files
//! ```
//!
//! A generation is written into a fresh directory (mode 0700 while it is written): every
//! directory with `mkdir` and every file with `O_CREAT|O_EXCL` (`create_new`), so nothing in it
//! can be a planted symlink; each file gets its final mode, owner, content and `fsync` before
//! the directory is made readable (0755) and fsynced. Then a temporary link `..data_tmp` is
//! renamed over `..data`: one atomic step switches every file at once. Top-level links are
//! created with a temporary link and a rename as well, links of names that disappeared are
//! removed, and the previous generation directory is deleted. A failed write deletes the
//! half-written directory and leaves `..data` as it was.

use std::{
    collections::BTreeMap,
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use inject_api::layout;

use crate::{paths::SafePath, value::Sensitive};

/// Mode of directories inside a generation: names are not secret, contents are protected by
/// the files' own modes.
pub const DIR_MODE: u32 = 0o755;
/// Mode of the agent's own files at the root (`.ps-ready`, `.ps-result.json`, marker files):
/// they never hold a value.
pub const META_MODE: u32 = 0o444;
const DATA_TMP: &str = "..data_tmp";

/// One file to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    pub content: Sensitive,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Who wants an entry: one output of the plan, or the agent itself (`.ps-env`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Agent,
    /// Output `index` of the plan, with the label messages name it by.
    Output {
        index: usize,
        label: Arc<str>,
    },
}

impl Owner {
    fn index(&self) -> Option<usize> {
        match self {
            Owner::Agent => None,
            Owner::Output { index, .. } => Some(*index),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File {
        spec: FileSpec,
        owner: Owner,
    },
    Dir {
        children: BTreeMap<String, Node>,
        uid: Option<u32>,
        gid: Option<u32>,
        owner: Owner,
    },
}

/// The content of one generation: files and directories with modes and owners, each tagged with
/// the output that wants it (for error messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    top: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Adds every entry of one output, or none: on a conflict with what other outputs already
    /// added, the tree is unchanged and the message says where.
    pub fn add_output(&mut self, owner: Owner, entries: Vec<Entry>) -> Result<(), String> {
        let mut next = self.top.clone();
        for e in entries {
            match e {
                Entry::File(path, spec) => insert(&mut next, path.components(), Some(spec), None, &owner)?,
                Entry::Dir(path, uid, gid) => {
                    insert(&mut next, path.components(), None, Some((uid, gid)), &owner)?
                }
            }
        }
        self.top = next;
        Ok(())
    }

    /// Adds one of the agent's own files inside the generation (such as `.ps-env`); the name is
    /// a constant of the agent, not checked against the path rule.
    pub fn add_agent_file(&mut self, name: &str, spec: FileSpec) {
        self.top.insert(
            name.to_owned(),
            Node::File {
                spec,
                owner: Owner::Agent,
            },
        );
    }

    /// Names directly under the root that users see (links through `..data`).
    pub fn top_names(&self) -> impl Iterator<Item = &str> {
        self.top
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with('.'))
    }

    fn owner_of_top(&self, name: &str) -> &Owner {
        match self.top.get(name) {
            Some(Node::File { owner, .. } | Node::Dir { owner, .. }) => owner,
            None => &Owner::Agent,
        }
    }

    /// Number of files.
    pub fn file_count(&self) -> usize {
        fn count(m: &BTreeMap<String, Node>) -> usize {
            m.values()
                .map(|n| match n {
                    Node::File { .. } => 1,
                    Node::Dir { children, .. } => count(children),
                })
                .sum()
        }
        count(&self.top)
    }

    /// SHA-256 over names, modes, owners and contents: equal digests mean equal generations.
    pub fn digest(&self) -> [u8; 32] {
        fn walk(ctx: &mut ring::digest::Context, m: &BTreeMap<String, Node>) {
            for (name, node) in m {
                ctx.update(&(name.len() as u64).to_le_bytes());
                ctx.update(name.as_bytes());
                match node {
                    Node::File { spec, .. } => {
                        ctx.update(b"F");
                        ctx.update(&spec.mode.to_le_bytes());
                        ctx.update(&opt(spec.uid));
                        ctx.update(&opt(spec.gid));
                        ctx.update(&(spec.content.len() as u64).to_le_bytes());
                        ctx.update(spec.content.expose());
                    }
                    Node::Dir {
                        children, uid, gid, ..
                    } => {
                        ctx.update(b"D");
                        ctx.update(&opt(*uid));
                        ctx.update(&opt(*gid));
                        walk(ctx, children);
                        ctx.update(b"E");
                    }
                }
            }
        }
        fn opt(v: Option<u32>) -> [u8; 5] {
            let mut b = [0u8; 5];
            if let Some(v) = v {
                b[0] = 1;
                b[1..].copy_from_slice(&v.to_le_bytes());
            }
            b
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        walk(&mut ctx, &self.top);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// One entry of an output.
#[derive(Debug)]
pub enum Entry {
    File(SafePath, FileSpec),
    /// A directory that exists even when empty (a raw folder output), with its owner.
    Dir(SafePath, Option<u32>, Option<u32>),
}

fn insert(
    map: &mut BTreeMap<String, Node>,
    comps: &[String],
    file: Option<FileSpec>,
    dir: Option<(Option<u32>, Option<u32>)>,
    owner: &Owner,
) -> Result<(), String> {
    let (first, rest) = comps.split_first().ok_or("empty path")?;
    if rest.is_empty() {
        return match (map.get_mut(first), file, dir) {
            (None, Some(spec), _) => {
                map.insert(
                    first.clone(),
                    Node::File {
                        spec,
                        owner: owner.clone(),
                    },
                );
                Ok(())
            }
            (None, None, Some((uid, gid))) => {
                map.insert(
                    first.clone(),
                    Node::Dir {
                        children: BTreeMap::new(),
                        uid,
                        gid,
                        owner: owner.clone(),
                    },
                );
                Ok(())
            }
            (Some(Node::File { spec: existing, .. }), Some(spec), _) if *existing == spec => Ok(()),
            (Some(Node::Dir { uid, gid, .. }), None, Some(want))
                if (*uid, *gid) == want || want == (None, None) =>
            {
                Ok(())
            }
            (Some(Node::File { owner: other, .. }), ..) | (Some(Node::Dir { owner: other, .. }), ..) => {
                Err(format!(
                    "{first:?} is also written by {}, with different content",
                    describe_owner(other, owner)
                ))
            }
            (None, None, None) => Err("nothing to add".into()),
        };
    }
    let node = map.entry(first.clone()).or_insert_with(|| Node::Dir {
        children: BTreeMap::new(),
        uid: None,
        gid: None,
        owner: owner.clone(),
    });
    match node {
        Node::Dir { children, .. } => insert(children, rest, file, dir, owner),
        Node::File { owner: other, .. } => Err(format!(
            "{first:?} must be a directory, but {} writes a file there",
            describe_owner(other, owner)
        )),
    }
}

fn describe_owner(other: &Owner, me: &Owner) -> String {
    match other {
        _ if other == me => "this output".to_owned(),
        Owner::Agent => "the agent".to_owned(),
        Owner::Output { label, .. } => label.to_string(),
    }
}

/// A failed write. `output` is the index of the output whose entry failed, when it is one
/// output's.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {source}{hint}")]
pub struct WriteError {
    pub output: Option<usize>,
    pub op: &'static str,
    pub path: String,
    pub hint: &'static str,
    /// True when the new generation was already switched in (only link maintenance failed).
    pub switched: bool,
    #[source]
    pub source: io::Error,
}

impl WriteError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> WriteError {
        WriteError {
            output: None,
            op,
            path: path.display().to_string(),
            hint: "",
            switched: false,
            source,
        }
    }

    fn owned_by(mut self, owner: &Owner) -> WriteError {
        self.output = owner.index();
        self
    }
}

/// What a commit did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Name of the new generation directory.
    pub generation: String,
    pub files: usize,
    /// Whether a previous generation was replaced.
    pub replaced: bool,
}

/// The output root.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// Opens (creating if needed) the root and removes what a crashed earlier run may have left:
    /// every `..`-entry except `..data` and the generation it points to.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Root, WriteError> {
        let dir = dir.into();
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| WriteError::new("create the output directory", &dir, e))?;
        let root = Root { dir };
        root.remove_stale(None)?;
        Ok(root)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The generation `..data` points to, if any.
    pub fn current(&self) -> Option<String> {
        let target = fs::read_link(self.dir.join(layout::DATA_LINK)).ok()?;
        let name = target.to_str()?;
        (name.starts_with("..") && !name.contains('/') && name != layout::DATA_LINK).then(|| name.to_owned())
    }

    /// Writes `tree` as a new generation and switches it in.
    pub fn commit(&self, tree: &Tree) -> Result<Committed, WriteError> {
        // Top-level names must be free, links, or plain files (replaced by a rename).
        for name in tree.top_names() {
            let p = self.dir.join(name);
            if let Ok(meta) = fs::symlink_metadata(&p)
                && meta.is_dir()
            {
                let mut e = WriteError::new(
                    "link",
                    &p,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a directory not made by the agent is in the way",
                    ),
                );
                e.hint = " (remove it from the volume)";
                return Err(e.owned_by(tree.owner_of_top(name)));
            }
        }
        let previous = self.current();
        let generation = new_generation_name();
        let gen_dir = self.dir.join(&generation);
        DirBuilder::new()
            .mode(0o700)
            .create(&gen_dir)
            .map_err(|e| WriteError::new("create the generation directory", &gen_dir, e))?;
        let written = write_dir(&gen_dir, &tree.top).and_then(|()| {
            fs::set_permissions(&gen_dir, fs::Permissions::from_mode(DIR_MODE))
                .map_err(|e| WriteError::new("set the mode of", &gen_dir, e))?;
            sync_dir(&gen_dir)
        });
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&gen_dir);
            return Err(e);
        }
        // The switch: one rename of a symlink.
        let tmp = self.dir.join(DATA_TMP);
        let switched = remove_if_present(&tmp)
            .and_then(|()| std::os::unix::fs::symlink(&generation, &tmp))
            .map_err(|e| WriteError::new("create the link", &tmp, e))
            .and_then(|()| {
                fs::rename(&tmp, self.dir.join(layout::DATA_LINK))
                    .map_err(|e| WriteError::new("switch in", &self.dir.join(layout::DATA_LINK), e))
            });
        if let Err(e) = switched {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_dir_all(&gen_dir);
            return Err(e);
        }
        let after = self
            .relink(tree)
            .and_then(|()| self.remove_stale(Some(&generation)));
        let after = after.and_then(|()| sync_dir(&self.dir));
        if let Err(mut e) = after {
            e.switched = true;
            return Err(e);
        }
        Ok(Committed {
            generation,
            files: tree.file_count(),
            replaced: previous.is_some(),
        })
    }

    /// Makes `<root>/<name>` a link to `..data/<name>` for every top-level name, and removes
    /// links through `..data` whose name is gone.
    fn relink(&self, tree: &Tree) -> Result<(), WriteError> {
        let wanted: Vec<&str> = tree.top_names().collect();
        for name in &wanted {
            let link = self.dir.join(name);
            let target = Path::new(layout::DATA_LINK).join(name);
            if fs::read_link(&link).is_ok_and(|t| t == target) {
                continue;
            }
            let tmp = self.dir.join(format!("..link_tmp_{:08x}", fastrand::u32(..)));
            std::os::unix::fs::symlink(&target, &tmp)
                .map_err(|e| WriteError::new("create the link", &tmp, e))?;
            if let Err(e) = fs::rename(&tmp, &link) {
                let _ = fs::remove_file(&tmp);
                return Err(WriteError::new("link", &link, e).owned_by(tree.owner_of_top(name)));
            }
        }
        let entries = fs::read_dir(&self.dir).map_err(|e| WriteError::new("list", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || wanted.contains(&name) {
                continue;
            }
            let p = entry.path();
            if fs::read_link(&p).is_ok_and(|t| t.starts_with(layout::DATA_LINK)) {
                remove_if_present(&p).map_err(|e| WriteError::new("remove the old link", &p, e))?;
            }
        }
        Ok(())
    }

    /// Removes every `..`-entry but `..data` and the generation it points to (or `keep`).
    fn remove_stale(&self, keep: Option<&str>) -> Result<(), WriteError> {
        let current = keep.map(str::to_owned).or_else(|| self.current());
        let entries = fs::read_dir(&self.dir).map_err(|e| WriteError::new("list", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("..") || name == layout::DATA_LINK || current.as_deref() == Some(name) {
                continue;
            }
            let p = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let r = if is_dir {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(WriteError::new("remove", &p, e)),
            }
        }
        Ok(())
    }

    /// Writes one of the agent's own files at the root atomically (temporary file, rename).
    pub fn write_meta(&self, name: &str, content: &[u8]) -> Result<(), WriteError> {
        let tmp = self.dir.join(format!("..tmp_{:08x}", fastrand::u32(..)));
        let dest = self.dir.join(name);
        let r = (|| {
            let mut f = create_file(&tmp, META_MODE)?;
            f.write_all(content)?;
            f.set_permissions(fs::Permissions::from_mode(META_MODE))?;
            f.sync_all()?;
            fs::rename(&tmp, &dest)
        })();
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(WriteError::new("write", &dest, e));
        }
        sync_dir(&self.dir)
    }
}

fn create_file(path: &Path, mode: u32) -> io::Result<File> {
    // O_EXCL: fails on anything already there, a symlink included; O_NOFOLLOW for good measure.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

fn write_dir(dir: &Path, entries: &BTreeMap<String, Node>) -> Result<(), WriteError> {
    for (name, node) in entries {
        let p = dir.join(name);
        match node {
            Node::File { spec, owner } => write_file(&p, spec).map_err(|e| e.owned_by(owner))?,
            Node::Dir {
                children,
                uid,
                gid,
                owner,
            } => {
                DirBuilder::new()
                    .mode(DIR_MODE)
                    .create(&p)
                    .map_err(|e| WriteError::new("create the directory", &p, e).owned_by(owner))?;
                let d = File::open(&p).map_err(|e| WriteError::new("open", &p, e).owned_by(owner))?;
                d.set_permissions(fs::Permissions::from_mode(DIR_MODE))
                    .map_err(|e| WriteError::new("set the mode of", &p, e).owned_by(owner))?;
                if uid.is_some() || gid.is_some() {
                    chown(&d, &p, *uid, *gid).map_err(|e| e.owned_by(owner))?;
                }
                write_dir(&p, children)?;
                d.sync_all()
                    .map_err(|e| WriteError::new("sync", &p, e).owned_by(owner))?;
            }
        }
    }
    Ok(())
}

fn write_file(p: &Path, spec: &FileSpec) -> Result<(), WriteError> {
    let mut f = create_file(p, spec.mode).map_err(|e| WriteError::new("create", p, e))?;
    f.write_all(spec.content.expose())
        .map_err(|e| WriteError::new("write", p, e))?;
    // Exactly the configured bits, whatever the umask.
    f.set_permissions(fs::Permissions::from_mode(spec.mode))
        .map_err(|e| WriteError::new("set the mode of", p, e))?;
    if spec.uid.is_some() || spec.gid.is_some() {
        chown(&f, p, spec.uid, spec.gid)?;
    }
    f.sync_all().map_err(|e| WriteError::new("sync", p, e))
}

fn chown(f: &File, p: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), WriteError> {
    std::os::unix::fs::fchown(f, uid, gid).map_err(|e| {
        let mut e = WriteError::new("change the owner of", p, e);
        e.op = match (uid, gid) {
            (Some(_), Some(_)) => "set uid and gid of",
            (Some(_), None) => "set the uid of",
            _ => "set the gid of",
        };
        e.hint =
            " (setting uid/gid needs the agent to run as root or with CAP_CHOWN, or as that user and group)";
        e
    })
}

fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WriteError::new("sync", dir, e))
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn_rrrr`: sortable, unique, reserved (starts with `..`).
fn new_generation_name() -> String {
    // RFC 3339 with nanoseconds (`2026-01-02T03:04:05.123456789Z`) has the fields in the
    // order wanted; only the separators differ.
    let stamp = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let stamp: String = stamp
        .trim_end_matches('Z')
        .chars()
        .map(|c| if matches!(c, '-' | 'T' | ':') { '_' } else { c })
        .collect();
    format!("..{stamp}_{:04x}", fastrand::u16(..))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn spec(v: &str, mode: u32) -> FileSpec {
        FileSpec {
            content: Sensitive::from(v),
            mode,
            uid: None,
            gid: None,
        }
    }

    fn file(path: &[&str], v: &str) -> Entry {
        Entry::File(SafePath::new(path).unwrap(), spec(v, 0o400))
    }

    /// Output `name` of a plan, as generation.rs labels it.
    fn out(name: &str) -> Owner {
        Owner::Output {
            index: name.bytes().fold(0, |h, b| h * 31 + usize::from(b)),
            label: format!("output {name:?}").into(),
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn tree_conflicts_are_all_or_nothing() {
        let mut t = Tree::new();
        t.add_output(out("a"), vec![file(&["x", "y"], "1")]).unwrap();
        // Same file, same content: fine (BeyondTrust lists may name a secret twice).
        t.add_output(out("b"), vec![file(&["x", "y"], "1")]).unwrap();
        let before = t.clone();
        let e = t
            .add_output(out("c"), vec![file(&["z"], "ok"), file(&["x", "y"], "2")])
            .unwrap_err();
        assert!(e.contains(r#""y" is also written by output "a", with"#), "{e}");
        assert_eq!(t, before, "nothing of c was added");
        let e = t
            .add_output(out("d"), vec![file(&["x", "y", "w"], "1")])
            .unwrap_err();
        assert!(e.contains("\"y\" must be a directory"), "{e}");
        assert_eq!(t.file_count(), 1);
        assert_eq!(t.top_names().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn digest_changes_with_content_and_mode() {
        let mut a = Tree::new();
        a.add_output(out("a"), vec![file(&["x"], "1")]).unwrap();
        let mut b = Tree::new();
        b.add_output(out("a"), vec![file(&["x"], "2")]).unwrap();
        let mut c = Tree::new();
        c.add_output(
            out("a"),
            vec![Entry::File(SafePath::new(&["x"]).unwrap(), spec("1", 0o440))],
        )
        .unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_eq!(a.digest(), a.clone().digest());
    }

    #[test]
    fn commit_layout_and_replacement() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path().join("root")).unwrap();
        let mut t = Tree::new();
        t.add_output(out("db"), vec![file(&["db"], "one")]).unwrap();
        t.add_output(out("bt"), vec![file(&["team", "sub", "title"], "two")])
            .unwrap();
        t.add_agent_file(".ps-env", spec("{}", 0o440));
        let c1 = root.commit(&t).unwrap();
        assert!(!c1.replaced);
        assert_eq!(c1.files, 3);
        let r = root.path();
        assert_eq!(read(&r.join("db")), "one");
        assert_eq!(read(&r.join("team/sub/title")), "two");
        assert_eq!(read(&r.join("..data/.ps-env")), "{}");
        assert_eq!(fs::read_link(r.join("db")).unwrap(), Path::new("..data/db"));
        assert_eq!(
            fs::read_link(r.join("..data")).unwrap(),
            Path::new(&c1.generation)
        );
        let meta = fs::metadata(r.join("db")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o400);
        assert_eq!(
            fs::metadata(r.join("..data/.ps-env")).unwrap().mode() & 0o7777,
            0o440
        );
        assert_eq!(
            fs::metadata(r.join(&c1.generation)).unwrap().mode() & 0o7777,
            0o755
        );

        // Second generation: "team" disappears, "db" changes, "new" appears.
        let mut t2 = Tree::new();
        t2.add_output(out("db"), vec![file(&["db"], "three")]).unwrap();
        t2.add_output(out("new"), vec![file(&["new"], "four")]).unwrap();
        let c2 = root.commit(&t2).unwrap();
        assert!(c2.replaced);
        assert_eq!(read(&r.join("db")), "three");
        assert_eq!(read(&r.join("new")), "four");
        assert!(
            fs::symlink_metadata(r.join("team")).is_err(),
            "stale link removed"
        );
        assert_eq!(entries(r), [&c2.generation, "..data", "db", "new"]);
    }

    #[test]
    fn stale_entries_are_cleaned_and_user_files_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        fs::create_dir(r.join("..2000_crashed")).unwrap();
        fs::write(r.join("..2000_crashed/x"), "old").unwrap();
        std::os::unix::fs::symlink("..2000_crashed", r.join("..data_tmp")).unwrap();
        fs::write(r.join("..tmp_1234"), "half").unwrap();
        fs::create_dir(r.join(".ps-bin")).unwrap();
        fs::write(r.join("unrelated"), "user").unwrap();
        let root = Root::open(r).unwrap();
        assert_eq!(entries(r), [".ps-bin", "unrelated"]);
        let mut t = Tree::new();
        t.add_output(out("unrelated"), vec![file(&["unrelated"], "mine")])
            .unwrap();
        root.commit(&t).unwrap();
        // A plain file with an output's name is replaced by the link.
        assert_eq!(read(&r.join("unrelated")), "mine");
        assert!(
            fs::symlink_metadata(r.join("unrelated"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn directory_in_the_way_fails_before_anything_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let root = Root::open(r).unwrap();
        let mut t = Tree::new();
        t.add_output(out("a"), vec![file(&["a"], "1")]).unwrap();
        let c1 = root.commit(&t).unwrap();
        fs::create_dir(r.join("b")).unwrap();
        let mut t2 = Tree::new();
        t2.add_output(out("a"), vec![file(&["a"], "2")]).unwrap();
        t2.add_output(out("b-output"), vec![file(&["b"], "x")]).unwrap();
        let e = root.commit(&t2).unwrap_err();
        assert_eq!(e.output, out("b-output").index());
        assert!(!e.switched);
        assert!(e.to_string().contains("directory not made by the agent"), "{e}");
        assert_eq!(root.current().as_deref(), Some(c1.generation.as_str()));
        assert_eq!(read(&r.join("a")), "1");
        assert_eq!(entries(r), [&c1.generation, "..data", "a", "b"]);
    }

    #[test]
    fn generation_names_sort_by_time_and_are_reserved() {
        let a = new_generation_name();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_generation_name();
        // `..2026_01_02_03_04_05.123456789_1a2b`
        assert_eq!(a.len(), 36, "{a}");
        assert!(
            a.starts_with("..") && a.as_bytes()[12] == b'_' && a.as_bytes()[21] == b'.',
            "{a}"
        );
        assert!(
            a[2..31]
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b'_' || c == b'.'),
            "{a}"
        );
        assert!(a[..31] < b[..31], "{a} then {b}");
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let r = tmp.path().join("root");
        fs::create_dir(&r).unwrap();
        // A planted link with an output's name and one with a folder's name.
        std::os::unix::fs::symlink(outside.join("victim"), r.join("db")).unwrap();
        std::os::unix::fs::symlink(&outside, r.join("team")).unwrap();
        let root = Root::open(&r).unwrap();
        let mut t = Tree::new();
        t.add_output(out("db"), vec![file(&["db"], "v")]).unwrap();
        t.add_output(out("bt"), vec![file(&["team", "x"], "v")]).unwrap();
        root.commit(&t).unwrap();
        assert!(entries(&outside).is_empty(), "nothing written outside the root");
        assert_eq!(read(&r.join("team/x")), "v");
    }

    #[test]
    fn meta_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::open(tmp.path()).unwrap();
        root.write_meta(".ps-ready", b"x\n").unwrap();
        root.write_meta(".ps-ready", b"y\n").unwrap();
        assert_eq!(read(&tmp.path().join(".ps-ready")), "y\n");
        assert_eq!(
            fs::metadata(tmp.path().join(".ps-ready")).unwrap().mode() & 0o777,
            0o444
        );
        assert_eq!(entries(tmp.path()), [".ps-ready"]);
    }
}
