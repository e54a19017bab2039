//! The folder an agent may read under ([`Root`]), and opening a path beneath it once
//! (design invariant 13).
//!
//! A path is relative to the root: an absolute path, `~` or a `..` part is refused outright.
//! What it names is opened *once*, relative to a descriptor of the root taken when the agent
//! started; the file tools then check and read the opened descriptor, so no name is looked up
//! twice and a writer in the root who swaps a file for a link between a check and a read
//! gains nothing.
//!
//! - Opening is `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel refuses,
//!   in the same call that opens, any resolution that would leave the root (an absolute
//!   symbolic link, a relative one climbing out, a `/proc` magic link). A symbolic link that
//!   stays inside is followed. Where `openat2` is missing (Linux before 5.6, or a seccomp
//!   filter refusing it) the path is walked one part at a time from the root's descriptor
//!   with `O_NOFOLLOW`: there no symbolic link is followed at all.
//! - A file is opened non-blocking and without becoming a controlling terminal (a fifo would
//!   otherwise wait for a writer for ever) and `fstat`ed: only a regular file is read, and
//!   only one with a single link, since a hard link inside the root may be the very inode of a
//!   file outside it and nothing on the descriptor tells which name is the real one (a file
//!   linked twice inside the root is refused too).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use super::ToolError;

/// Tries of an `openat2` that a concurrent rename made the kernel give up (`EAGAIN`).
const OPEN_TRIES: usize = 8;

/// How paths are opened beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolve {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`.
    Beneath,
    /// A part at a time with `O_NOFOLLOW`, where `openat2` is not available.
    Walk,
}

impl Resolve {
    /// `openat2` if this kernel (and any seccomp filter) lets it run, asked once a process.
    pub(super) fn available() -> Resolve {
        static AVAILABLE: OnceLock<Resolve> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            let flags = OFlags::PATH | OFlags::CLOEXEC;
            match rustix::fs::openat2(rustix::fs::CWD, ".", flags, Mode::empty(), beneath()) {
                Ok(_) => Resolve::Beneath,
                Err(error) => {
                    tracing::warn!(%error, "openat2 is not available: the file tools follow no symbolic link");
                    Resolve::Walk
                }
            }
        })
    }
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// The folder an agent may read under: its path, resolved once, and a descriptor of it that
/// every file tool opens beneath.
#[derive(Debug, Clone)]
pub struct Root {
    path: Arc<PathBuf>,
    dir: Arc<OwnedFd>,
    pub(super) resolve: Resolve,
}

/// What a tool opens a path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    File,
    Folder,
    /// A folder to walk or a file to read (a search's start).
    Either,
}

/// A path opened beneath the root, checked for what it was wanted for.
pub(super) struct Opened {
    pub(super) fd: OwnedFd,
    pub(super) stat: Stat,
    /// The path as the answer shows it: relative to the root, without `.` parts.
    pub(super) shown: String,
}

impl Root {
    pub fn new(path: impl AsRef<Path>) -> std::io::Result<Root> {
        Root::with(path, Resolve::available())
    }

    pub(super) fn with(path: impl AsRef<Path>, resolve: Resolve) -> std::io::Result<Root> {
        let path = std::fs::canonicalize(path)?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(&path, flags, Mode::empty())?;
        Ok(Root { path: Arc::new(path), dir: Arc::new(dir), resolve })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `relative` names under the root by name, or why it may not be used: for a
    /// command's arguments, which the program opens itself. The file tools open through
    /// the root's descriptor instead.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf, ToolError> {
        let parts = parts(relative)?;
        let joined = parts.iter().fold(self.path.to_path_buf(), |path, part| path.join(part));
        let resolved = std::fs::canonicalize(&joined)
            .map_err(|error| ToolError::Failed(format!("{relative:?}: {error}")))?;
        if !resolved.starts_with(self.path.as_path()) {
            return Err(ToolError::Refused(format!(
                "{relative:?}: it leads out of the agent's root (a symbolic link)"
            )));
        }
        Ok(resolved)
    }

    /// Opens `relative` beneath the root, once, and checks what the descriptor is.
    pub(super) fn open(&self, relative: &str, want: Want) -> Result<Opened, ToolError> {
        let parts = parts(relative)?;
        let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        if want == Want::Folder {
            flags |= OFlags::DIRECTORY;
        }
        let opened = match self.resolve {
            Resolve::Beneath => open_beneath(self.dir.as_fd(), &parts, flags),
            Resolve::Walk => open_walking(self.dir.as_fd(), &parts, flags),
        };
        let fd = opened.map_err(|error| refusal(relative, error))?;
        let stat = rustix::fs::fstat(&fd).map_err(|error| refusal(relative, error))?;
        let shown = shown(&parts);
        let refuse = |why: String| Err(ToolError::Refused(format!("{relative:?}: {why}")));
        match (FileType::from_raw_mode(stat.st_mode), want) {
            (FileType::Directory, Want::Folder | Want::Either) => {}
            (FileType::Directory, Want::File) => return refuse("a folder: list it".into()),
            (other, Want::Folder) => {
                return Err(ToolError::Failed(format!(
                    "{relative:?}: not a folder (a {})",
                    kind(other)
                )));
            }
            (FileType::RegularFile, _) if stat.st_nlink > 1 => {
                return refuse(hard_linked(stat.st_nlink));
            }
            (FileType::RegularFile, _) => {}
            (other, _) => return refuse(format!("not a regular file (a {})", kind(other))),
        }
        Ok(Opened { fd, stat, shown })
    }
}

/// Why a file with `links` names is refused.
pub(super) fn hard_linked(links: u64) -> String {
    format!("a file with {links} hard links: one may be outside the agent's root, so none is read")
}

/// The parts of a relative path, or why it may not be used.
pub(super) fn parts(relative: &str) -> Result<Vec<&OsStr>, ToolError> {
    let refuse = |why: &str| Err(ToolError::Refused(format!("{relative:?}: {why}")));
    if relative.contains('\0') {
        return refuse("not a path");
    }
    let path = Path::new(relative);
    if path.is_absolute() || relative.starts_with('~') {
        return refuse("a path is relative to the agent's root");
    }
    let mut parts = Vec::new();
    for part in path.components() {
        match part {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) | Component::RootDir => {
                return refuse("a path may not leave the agent's root");
            }
        }
    }
    Ok(parts)
}

fn shown(parts: &[&OsStr]) -> String {
    if parts.is_empty() {
        return ".".into();
    }
    let path: PathBuf = parts.iter().collect();
    path.to_string_lossy().into_owned()
}

/// How a failed open is told to the model: leaving the root or meeting a link that is not
/// followed is a refusal; a missing file and the like a failure.
pub(super) fn refusal(relative: &str, error: Errno) -> ToolError {
    match error {
        Errno::XDEV => ToolError::Refused(format!(
            "{relative:?}: it leads out of the agent's root (a symbolic link)"
        )),
        Errno::LOOP => {
            ToolError::Refused(format!("{relative:?}: a symbolic link that is not followed here"))
        }
        other => ToolError::Failed(format!("{relative:?}: {}", std::io::Error::from(other))),
    }
}

fn open_beneath(root: BorrowedFd<'_>, parts: &[&OsStr], flags: OFlags) -> Result<OwnedFd, Errno> {
    let path: PathBuf = if parts.is_empty() { ".".into() } else { parts.iter().collect() };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, &path, flags, Mode::empty(), beneath()) {
            Err(Errno::AGAIN) if tries + 1 < OPEN_TRIES => tries += 1,
            opened => return opened,
        }
    }
}

/// Opens `parts` one at a time from `root`, following no symbolic link: each folder on the
/// way is opened as a path (`O_PATH | O_NOFOLLOW`) and must be a folder, the last part with
/// `flags` and `O_NOFOLLOW`.
fn open_walking(root: BorrowedFd<'_>, parts: &[&OsStr], flags: OFlags) -> Result<OwnedFd, Errno> {
    let Some((last, folders)) = parts.split_last() else {
        return rustix::fs::openat(root, ".", flags, Mode::empty());
    };
    let mut at: Option<OwnedFd> = None;
    for part in folders {
        let from = at.as_ref().map_or(root, |fd| fd.as_fd());
        let step = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(from, *part, step, Mode::empty())?;
        match FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) {
            FileType::Directory => at = Some(fd),
            FileType::Symlink => return Err(Errno::LOOP),
            _ => return Err(Errno::NOTDIR),
        }
    }
    let from = at.as_ref().map_or(root, |fd| fd.as_fd());
    // Without `O_DIRECTORY`, which would answer a link with "not a folder" before `O_NOFOLLOW`
    // could refuse it: the caller tells a folder by the descriptor.
    let last_flags = flags.difference(OFlags::DIRECTORY) | OFlags::NOFOLLOW;
    rustix::fs::openat(from, *last, last_flags, Mode::empty())
}

/// What a kind of file is called in answers.
pub(super) fn kind(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "link",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Unknown => "unknown",
    }
}
