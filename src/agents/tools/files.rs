//! Reading under an allowed root: `read_file`, `list_dir`, `search_text` (design invariant 13).
//!
//! Every path is opened once beneath the agent's root ([`super::root`]), and everything
//! after that (the checks, the reading) uses the opened descriptor.
//!
//! - At most the bound is read ([`RESULT_BYTES_MAX`]; [`SEARCH_FILE_BYTES_MAX`] a file for a
//!   search), whatever the file's size.
//! - A binary file is handed back as a refusal naming its size, which the model sees like any
//!   tool error: a NUL in the first [`RESULT_BYTES_MAX`] bytes, or more of them not UTF-8 than
//!   a text holds (over one in [`INVALID_UTF8_ONE_IN`], and over [`INVALID_UTF8_FREE`]). A few
//!   such bytes (a Latin-1 name, a character cut by the bound) are shown as U+FFFD.
//! - `search_text` walks folders from their descriptors (`openat` with `O_NOFOLLOW`, so no
//!   link is followed), skips what `read_file` would refuse and says how many it skipped.
//!
//! Each answer is bounded (bytes, entries, matches, files visited, depth).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use serde_json::{Value, json};

pub use super::root::Root;
use super::root::{Want, kind};
use super::{RESULT_BYTES_MAX, Tool, ToolError, capped};
use crate::llm::ToolSpec;

pub const LIST_ENTRIES_MAX: usize = 1_000;
pub const SEARCH_MATCHES_MAX: usize = 200;
/// Regular files one search reads.
pub const SEARCH_FILES_MAX: usize = 10_000;
/// Names one search looks at (files, folders, links, all): a folder of a million entries
/// costs this many, not a million.
pub const SEARCH_ENTRIES_MAX: usize = 100_000;
/// Folders a search descends into below its start; each level holds one open descriptor.
pub const SEARCH_DEPTH_MAX: usize = 32;
/// Files larger than this are not searched.
pub const SEARCH_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// A text may hold one byte in this many that is not UTF-8 (Latin-1 prose has a few in a
/// hundred; random bytes, a compressed file's, about one in two) ...
pub const INVALID_UTF8_ONE_IN: usize = 8;
/// ... and this many in any case; more, and it is a binary file.
pub const INVALID_UTF8_FREE: usize = 4;

/// Up to `bound` bytes from the start of an opened file.
fn read_bounded(fd: OwnedFd, bound: u64) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(bound.min(RESULT_BYTES_MAX as u64) as usize);
    File::from(fd).take(bound).read_to_end(&mut head)?;
    Ok(head)
}

/// Why `head`, a file's first bytes (`whole` when it is all of it), is no text, if it is not.
fn binary(head: &[u8], whole: bool) -> Option<&'static str> {
    let probe = &head[..head.len().min(RESULT_BYTES_MAX)];
    if probe.contains(&0) {
        return Some("it holds a NUL");
    }
    let (mut invalid, mut rest) = (0usize, probe);
    while let Err(error) = std::str::from_utf8(rest) {
        match error.error_len() {
            Some(bad) => {
                invalid += bad;
                rest = &rest[error.valid_up_to() + bad..];
            }
            // A character cut at the end: by the bound, unless this is the whole file.
            None => {
                if whole && probe.len() == head.len() {
                    invalid += rest.len() - error.valid_up_to();
                }
                break;
            }
        }
    }
    (invalid > INVALID_UTF8_FREE.max(probe.len() / INVALID_UTF8_ONE_IN))
        .then_some("it is not UTF-8 text")
}

fn spec(name: &str, description: &str, parameters: Value) -> ToolSpec {
    ToolSpec { name: name.into(), description: description.into(), parameters }
}

fn blocking<F>(work: F) -> BoxFuture<'static, Result<Value, ToolError>>
where
    F: FnOnce() -> Result<Value, ToolError> + Send + 'static,
{
    async move {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|error| Err(ToolError::Failed(format!("the tool stopped: {error}"))))
    }
    .boxed()
}

fn failed(relative: &str) -> impl Fn(std::io::Error) -> ToolError + '_ {
    move |error| ToolError::Failed(format!("{relative:?}: {error}"))
}

pub struct ReadFile(pub Root);

impl Tool for ReadFile {
    fn spec(&self) -> ToolSpec {
        spec(
            "read_file",
            "Reads a text file under the working folder (at most 64 KiB of it).",
            json!({ "type": "object", "properties": { "path": { "type": "string", "description": "relative to the working folder" } }, "required": ["path"] }),
        )
    }

    fn run(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let root = self.0.clone();
        blocking(move || {
            let relative = arguments["path"].as_str().unwrap_or_default();
            let opened = root.open(relative, Want::File)?;
            let size = u64::try_from(opened.stat.st_size).unwrap_or(0);
            let bound = RESULT_BYTES_MAX as u64;
            let head = read_bounded(opened.fd, bound).map_err(failed(relative))?;
            if let Some(why) = binary(&head, (head.len() as u64) < bound) {
                return Err(ToolError::Refused(format!(
                    "{relative:?}: binary file, {size} bytes ({why}); not shown"
                )));
            }
            let (content, truncated) = capped(&String::from_utf8_lossy(&head));
            let truncated = truncated || size > head.len() as u64;
            Ok(
                json!({ "path": opened.shown, "content": content, "truncated": truncated, "bytes": size }),
            )
        })
    }
}

pub struct ListDir(pub Root);

impl Tool for ListDir {
    fn spec(&self) -> ToolSpec {
        spec(
            "list_dir",
            "Lists a folder under the working folder: names, kinds and sizes.",
            json!({ "type": "object", "properties": { "path": { "type": "string", "description": "relative to the working folder; . for itself" } }, "required": ["path"] }),
        )
    }

    fn run(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let root = self.0.clone();
        blocking(move || {
            let relative = arguments["path"].as_str().unwrap_or_default();
            let opened = root.open(relative, Want::Folder)?;
            let reading = Dir::read_from(&opened.fd)
                .map_err(|error| failed(relative)(std::io::Error::from(error)))?;
            let (mut entries, mut more) = (Vec::new(), false);
            for entry in reading.filter_map(Result::ok) {
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                if entries.len() == LIST_ENTRIES_MAX {
                    more = true;
                    break;
                }
                // Its kind and size only, by name in the opened folder: nothing is read.
                let (file_type, size) =
                    match rustix::fs::statat(&opened.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(stat) => (
                            FileType::from_raw_mode(stat.st_mode),
                            u64::try_from(stat.st_size).unwrap_or(0),
                        ),
                        Err(_) => (entry.file_type(), 0),
                    };
                let name = String::from_utf8_lossy(name.to_bytes());
                entries.push(json!({ "name": name, "kind": kind(file_type), "bytes": size }));
            }
            entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            Ok(json!({ "path": opened.shown, "entries": entries, "truncated": more }))
        })
    }
}

pub struct SearchText(pub Root);

impl Tool for SearchText {
    fn spec(&self) -> ToolSpec {
        spec(
            "search_text",
            "Finds lines containing a text in the files under a folder of the working folder.",
            json!({ "type": "object", "properties": {
                "text": { "type": "string", "description": "the text to find (not a pattern)" },
                "path": { "type": "string", "description": "the folder or file to search; . by default" } },
                "required": ["text"] }),
        )
    }

    fn run(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let root = self.0.clone();
        blocking(move || {
            let needle = arguments["text"].as_str().unwrap_or_default();
            if needle.is_empty() {
                return Err(ToolError::Refused("\"text\" must not be empty".into()));
            }
            let start = root.open(arguments["path"].as_str().unwrap_or("."), Want::Either)?;
            let mut search = Search { needle, ..Search::default() };
            let shown = if start.shown == "." { PathBuf::new() } else { start.shown.into() };
            let mut pending = Vec::new();
            if FileType::from_raw_mode(start.stat.st_mode) == FileType::Directory {
                search.list(Arc::new(start.fd), &shown, 0, &mut pending);
            } else {
                search.file(start.fd, &start.stat, &shown);
            }
            while !search.more
                && let Some(next) = pending.pop()
            {
                search.visit(next, &mut pending);
            }
            Ok(
                json!({ "matches": search.matches, "truncated": search.more, "skipped": search.skipped }),
            )
        })
    }
}

/// What a search passed over without reading, by why: the model learns that there was more.
#[derive(Debug, Default, serde::Serialize)]
struct Skipped {
    binary: usize,
    hard_linked: usize,
    too_large: usize,
    /// Symbolic links: a search follows none.
    links: usize,
    /// Fifos, sockets, devices.
    special: usize,
    /// Folders deeper than [`SEARCH_DEPTH_MAX`].
    too_deep: usize,
    unreadable: usize,
}

/// A name in a folder the search has yet to look at, with its folder's descriptor.
struct Pending {
    parent: Arc<OwnedFd>,
    name: std::ffi::CString,
    shown: PathBuf,
    depth: usize,
}

#[derive(Default)]
struct Search<'a> {
    needle: &'a str,
    matches: Vec<Value>,
    skipped: Skipped,
    files: usize,
    entries: usize,
    more: bool,
}

impl Search<'_> {
    /// Queues a folder's entries (at `depth` below the start), to be taken in name order.
    fn list(&mut self, dir: Arc<OwnedFd>, shown: &Path, depth: usize, pending: &mut Vec<Pending>) {
        let Ok(reading) = Dir::read_from(&*dir) else {
            self.skipped.unreadable += 1;
            return;
        };
        let mut names = Vec::new();
        for entry in reading.filter_map(Result::ok) {
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            if self.entries == SEARCH_ENTRIES_MAX {
                self.more = true;
                break;
            }
            self.entries += 1;
            // What the folder says it is spares an open; an unknown kind is opened and told
            // by its descriptor.
            match entry.file_type() {
                FileType::Symlink => self.skipped.links += 1,
                FileType::Fifo
                | FileType::Socket
                | FileType::CharacterDevice
                | FileType::BlockDevice => self.skipped.special += 1,
                _ => names.push(name.to_owned()),
            }
        }
        names.sort_unstable_by(|a, b| b.cmp(a));
        for name in names {
            let shown = shown.join(OsStr::from_bytes(name.to_bytes()));
            pending.push(Pending { parent: dir.clone(), name, shown, depth: depth + 1 });
        }
    }

    /// Opens a queued name in its folder, following no link, and searches or lists it.
    fn visit(&mut self, next: Pending, pending: &mut Vec<Pending>) {
        let flags =
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&*next.parent, next.name.as_c_str(), flags, Mode::empty())
        {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return self.skipped.links += 1,
            Err(_) => return self.skipped.unreadable += 1,
        };
        let Ok(stat) = rustix::fs::fstat(&fd) else { return self.skipped.unreadable += 1 };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory if next.depth > SEARCH_DEPTH_MAX => self.skipped.too_deep += 1,
            FileType::Directory => self.list(Arc::new(fd), &next.shown, next.depth, pending),
            FileType::RegularFile => self.file(fd, &stat, &next.shown),
            _ => self.skipped.special += 1,
        }
    }

    /// Searches an opened regular file, unless `read_file` would refuse it.
    fn file(&mut self, fd: OwnedFd, stat: &Stat, shown: &Path) {
        if stat.st_nlink > 1 {
            return self.skipped.hard_linked += 1;
        }
        if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > SEARCH_FILE_BYTES_MAX {
            return self.skipped.too_large += 1;
        }
        if self.files == SEARCH_FILES_MAX {
            self.more = true;
            return;
        }
        self.files += 1;
        let Ok(bytes) = read_bounded(fd, SEARCH_FILE_BYTES_MAX) else {
            return self.skipped.unreadable += 1;
        };
        if binary(&bytes, (bytes.len() as u64) < SEARCH_FILE_BYTES_MAX).is_some() {
            return self.skipped.binary += 1;
        }
        let text = String::from_utf8_lossy(&bytes);
        let shown = shown.to_string_lossy();
        for (n, line) in text.lines().enumerate().filter(|(_, line)| line.contains(self.needle)) {
            if self.matches.len() == SEARCH_MATCHES_MAX {
                self.more = true;
                return;
            }
            let (line, _) = capped(line);
            let line: String = line.chars().take(500).collect();
            self.matches.push(json!({ "path": shown, "line": n + 1, "text": line }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::root::Resolve;
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// This process's peak resident memory (`VmHWM`), in KiB.
    fn peak_resident_kib() -> i64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A root holding `src/main.rs`, a folder beside it holding `secret.txt`, and links from
    /// the root to both.
    fn scratch() -> (PathBuf, Root) {
        let dir =
            std::env::temp_dir().join(format!("brain-root-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n// needle here\n").unwrap();
        let outside = dir.with_extension("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), "needle secret").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), dir.join("secret-link")).unwrap();
        let root = Root::new(&dir).unwrap();
        (dir, root)
    }

    /// The same root opened both ways: `openat2` and the walk without it.
    fn both(dir: &Path) -> [Root; 2] {
        [Root::with(dir, Resolve::Beneath).unwrap(), Root::with(dir, Resolve::Walk).unwrap()]
    }

    fn clean(dir: PathBuf) {
        let _ = std::fs::remove_dir_all(dir.with_extension("outside"));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn refused(outcome: Result<Value, ToolError>) -> String {
        match outcome {
            Err(ToolError::Refused(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn this_kernel_opens_beneath_the_root_with_openat2() {
        assert_eq!(Resolve::available(), Resolve::Beneath, "Linux 5.6 or later has openat2");
    }

    #[tokio::test]
    async fn a_huge_file_is_read_only_as_far_as_is_shown_and_a_binary_one_is_refused() {
        // Given a 1 GiB file that starts with text and a 1 GiB file of nothing but NULs
        // (sparse: they take no disk), and a short file holding a NUL.
        let (dir, root) = scratch();
        let text = "a line of text\n".repeat(5_000);
        std::fs::write(dir.join("huge.txt"), &text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.join("huge.txt"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        std::fs::File::create(dir.join("huge.bin")).unwrap().set_len(1 << 30).unwrap();
        std::fs::write(dir.join("nul.txt"), "before\0after").unwrap();
        let registry = super::super::Registry::default().with(ReadFile(root.clone()));

        // When the model reads them.
        let peak_before = peak_resident_kib();
        let read = registry.call("read_file", &json!({ "path": "huge.txt" })).await.unwrap();
        let zeros = registry.call("read_file", &json!({ "path": "huge.bin" })).await;
        let grew_kib = peak_resident_kib() - peak_before;
        let nul = registry.call("read_file", &json!({ "path": "nul.txt" })).await;

        // Then the text is cut at the result bound and says how big the file is, the others
        // are refused naming their size, and memory grew by about the bound, not the size.
        assert_eq!(
            (read["truncated"].as_bool(), read["bytes"].as_u64()),
            (Some(true), Some(1 << 30))
        );
        assert_eq!(read["content"].as_str().unwrap(), &text[..RESULT_BYTES_MAX]);
        assert!(grew_kib < 64 * 1024, "reading grew the process's peak by {grew_kib} KiB");
        let zeros = refused(zeros);
        assert!(zeros.contains("binary file, 1073741824 bytes"), "{zeros}");
        let nul = refused(nul);
        assert!(nul.contains("binary file, 12 bytes (it holds a NUL)"), "{nul}");
        clean(dir);
    }

    #[tokio::test]
    async fn a_binary_file_is_refused_and_text_with_a_few_stray_bytes_is_shown() {
        let (dir, root) = scratch();
        // Bytes that are no UTF-8 and no NUL (a compressed file's kind).
        let noise: Vec<u8> =
            (0..4096u32).map(|n| 0x80 | (n.wrapping_mul(2_654_435_761) >> 25) as u8).collect();
        std::fs::write(dir.join("noise.gz"), &noise).unwrap();
        std::fs::write(
            dir.join("latin1.txt"),
            b"Le caf\xe9 est pr\xeat, la cr\xe8me aussi.\n".repeat(20),
        )
        .unwrap();
        // A character cut by the bound is no sign of a binary file.
        std::fs::write(dir.join("euros.txt"), "\u{20ac}".repeat(30_000)).unwrap();
        let tool = ReadFile(root.clone());

        let noise = refused(tool.run(json!({ "path": "noise.gz" })).await);
        assert!(noise.contains("binary file, 4096 bytes (it is not UTF-8 text)"), "{noise}");
        let latin1 = tool.run(json!({ "path": "latin1.txt" })).await.unwrap();
        assert!(latin1["content"].as_str().unwrap().starts_with("Le caf\u{fffd} est pr\u{fffd}t"));
        let euros = tool.run(json!({ "path": "euros.txt" })).await.unwrap();
        assert_eq!(euros["truncated"], true);
        assert_eq!(euros["content"].as_str().unwrap().chars().count(), RESULT_BYTES_MAX / 3);
        // Too few stray bytes for a text of a few bytes to count as binary, too many for one
        // of a few hundred.
        assert_eq!(binary(b"\xff\xfe ok", true), None);
        assert_eq!(binary(&b"\xff".repeat(5), true), Some("it is not UTF-8 text"));
        assert_eq!(binary(&[b"\xff".repeat(8), b"x".repeat(64)].concat(), true), None);
        assert!(binary(&[b"\xff".repeat(10), b"x".repeat(64)].concat(), true).is_some());
        assert_eq!(binary(b"ends cut \xe2\x82", false), None);
        assert_eq!(binary(b"ends cut \xe2\x82", true), None, "two stray bytes are few");
        clean(dir);
    }

    #[tokio::test]
    async fn escapes_from_the_root_are_refused_and_nothing_outside_is_read() {
        let (dir, _) = scratch();
        for root in both(&dir) {
            for escape in [
                "../brain-root.outside/secret.txt",
                "/etc/passwd",
                "src/../../x",
                "out/secret.txt",
                "secret-link",
                "~/x",
            ] {
                let outcome = ReadFile(root.clone()).run(json!({ "path": escape })).await;
                assert!(
                    matches!(outcome, Err(ToolError::Refused(_))),
                    "{:?} {escape}: {outcome:?}",
                    root.resolve
                );
            }
            let read = ReadFile(root.clone()).run(json!({ "path": "./src/main.rs" })).await;
            let read = read.unwrap();
            assert_eq!(
                (&read["path"], &read["content"]),
                (&json!("src/main.rs"), &json!("fn main() {}\n// needle here\n"))
            );
            let found = SearchText(root.clone()).run(json!({ "text": "needle" })).await.unwrap();
            assert_eq!(
                found["matches"].as_array().unwrap().len(),
                1,
                "the links are not followed: {found}"
            );
            assert_eq!(found["matches"][0]["path"], "src/main.rs");
            assert_eq!(found["skipped"]["links"], 2);
            let listed = ListDir(root.clone()).run(json!({ "path": "." })).await.unwrap();
            let names: Vec<(&str, &str)> = listed["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
                .collect();
            assert_eq!(names, [("out", "link"), ("secret-link", "link"), ("src", "dir")]);
            let out = ListDir(root.clone()).run(json!({ "path": "out" })).await;
            assert!(matches!(out, Err(ToolError::Refused(_))), "{out:?}");
        }
        clean(dir);
    }

    #[tokio::test]
    async fn a_link_that_stays_inside_is_followed_where_openat2_checks_it() {
        let (dir, _) = scratch();
        std::os::unix::fs::symlink("src/main.rs", dir.join("inner-link")).unwrap();
        std::os::unix::fs::symlink("src", dir.join("inner-dir")).unwrap();
        std::os::unix::fs::symlink("../src/main.rs", dir.join("src/up-and-back")).unwrap();
        // An absolute link is refused even when it points inside: beneath the root, no path
        // starts at `/`.
        std::os::unix::fs::symlink(dir.join("src/main.rs"), dir.join("absolute-inside")).unwrap();
        let [beneath, walk] = both(&dir);
        for path in ["inner-link", "inner-dir/main.rs", "src/up-and-back"] {
            let read = ReadFile(beneath.clone()).run(json!({ "path": path })).await.unwrap();
            assert_eq!(read["content"], "fn main() {}\n// needle here\n", "{path}");
            let outcome = ReadFile(walk.clone()).run(json!({ "path": path })).await;
            assert!(refused(outcome).contains("symbolic link"), "{path} without openat2");
        }
        let outcome = ReadFile(beneath).run(json!({ "path": "absolute-inside" })).await;
        assert!(refused(outcome).contains("out of the agent's root"));
        clean(dir);
    }

    #[tokio::test]
    async fn a_hard_link_to_a_file_outside_is_refused() {
        // Given the outside secret hard-linked into the root (the same inode).
        let (dir, _) = scratch();
        std::fs::hard_link(dir.with_extension("outside").join("secret.txt"), dir.join("notes.txt"))
            .unwrap();
        for root in both(&dir) {
            // When the model reads it, or searches the root or the file itself.
            let read = refused(ReadFile(root.clone()).run(json!({ "path": "notes.txt" })).await);
            let found = SearchText(root.clone()).run(json!({ "text": "secret" })).await.unwrap();
            let alone = SearchText(root.clone())
                .run(json!({ "text": "secret", "path": "notes.txt" }))
                .await;

            // Then nothing of it is read, and the model is told why.
            assert!(read.contains("2 hard links"), "{read}");
            assert_eq!(found["matches"], json!([]), "{found}");
            assert_eq!(found["skipped"]["hard_linked"], 1, "{found}");
            assert!(refused(alone).contains("hard links"));
        }
        clean(dir);
    }

    #[tokio::test]
    async fn a_fifo_a_folder_and_a_missing_file_are_answered_at_once() {
        let (dir, root) = scratch();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("pipe"),
            FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let read = ReadFile(root.clone()).run(json!({ "path": "pipe" }));
        // Opening a fifo for reading waits for a writer, unless it is opened non-blocking.
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("reading a fifo does not wait for a writer");
        assert!(refused(read).contains("not a regular file (a fifo)"));
        let folder = refused(ReadFile(root.clone()).run(json!({ "path": "src" })).await);
        assert!(folder.contains("a folder"), "{folder}");
        let missing = ReadFile(root.clone()).run(json!({ "path": "nothing.txt" })).await;
        assert!(matches!(&missing, Err(ToolError::Failed(why)) if why.contains("No such file")));
        let listed = ListDir(root.clone()).run(json!({ "path": "." })).await.unwrap();
        assert!(
            listed["entries"]
                .as_array()
                .unwrap()
                .contains(&json!({ "name": "pipe", "kind": "fifo", "bytes": 0 }))
        );
        let found = SearchText(root).run(json!({ "text": "needle" })).await.unwrap();
        assert_eq!(found["skipped"]["special"], 1, "{found}");
        clean(dir);
    }

    #[tokio::test]
    async fn search_text_reads_text_files_only_and_says_what_it_passed_over() {
        // Given a tree with text, binary files holding the needle, a hard link, links out and
        // in, a fifo, a file over the search bound and a folder deeper than the search goes.
        let (dir, _) = scratch();
        std::fs::create_dir_all(dir.join("assets/img")).unwrap();
        std::fs::write(dir.join("assets/img/logo.png"), b"\x89PNG\r\n\x1a\n\0\0needle").unwrap();
        std::fs::write(dir.join("assets/data.bin"), [&[0xffu8; 64][..], b" needle"].concat())
            .unwrap();
        std::fs::write(dir.join("assets/readme.md"), "# assets\nno needle in the images\n")
            .unwrap();
        std::fs::hard_link(dir.join("src/main.rs"), dir.join("assets/main-copy.rs")).unwrap();
        std::os::unix::fs::symlink("readme.md", dir.join("assets/link-in")).unwrap();
        let big = "needle\n".repeat(SEARCH_FILE_BYTES_MAX as usize / 7 + 1);
        std::fs::write(dir.join("assets/big.log"), big).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("assets/pipe"),
            FileType::Fifo,
            Mode::RUSR,
            0,
        )
        .unwrap();
        let deep: PathBuf = (0..=SEARCH_DEPTH_MAX).map(|n| format!("d{n}")).collect();
        std::fs::create_dir_all(dir.join(&deep)).unwrap();
        std::fs::write(dir.join(&deep).join("deep.txt"), "needle at the bottom").unwrap();

        for root in both(&dir) {
            // When the model searches the whole root.
            let found = SearchText(root).run(json!({ "text": "needle" })).await.unwrap();

            // Then only the text files are read (the hard-linked main.rs neither under its
            // name nor its other), and each kind passed over is counted.
            let matched: Vec<&str> = found["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["path"].as_str().unwrap())
                .collect();
            assert_eq!(matched, ["assets/readme.md"], "{found}");
            assert_eq!(
                found["skipped"],
                json!({ "binary": 2, "hard_linked": 2, "too_large": 1, "links": 3,
                        "special": 1, "too_deep": 1, "unreadable": 0 }),
            );
            assert_eq!(found["truncated"], false);
        }
        clean(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_swapping_a_file_for_a_link_out_never_gets_the_outside_read() {
        // Given a file in the root that a writer keeps swapping (renames are atomic) for a
        // link to a file outside: absolute, relative, and /etc/passwd.
        let (dir, _) = scratch();
        let outside = dir.with_extension("outside").join("secret.txt");
        let relative_out = format!(
            "../{}/secret.txt",
            dir.with_extension("outside").file_name().unwrap().to_string_lossy()
        );
        let targets: [PathBuf; 3] = [outside.clone(), relative_out.into(), "/etc/passwd".into()];
        std::fs::write(dir.join("race.txt"), "inside").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(dir.join("swap.lnk"));
                    std::os::unix::fs::symlink(&targets[n % 3], dir.join("swap.lnk")).unwrap();
                    std::fs::rename(dir.join("swap.lnk"), dir.join("race.txt")).unwrap();
                    std::fs::write(dir.join("swap.txt"), "inside").unwrap();
                    std::fs::rename(dir.join("swap.txt"), dir.join("race.txt")).unwrap();
                    n += 1;
                }
                n
            })
        };

        // When the model reads it many times meanwhile, with and without openat2.
        let (mut read, mut refused) = (0, 0);
        for root in both(&dir) {
            for _ in 0..1_000 {
                match ReadFile(root.clone()).run(json!({ "path": "race.txt" })).await {
                    Ok(answer) => {
                        // Then what it reads is the file inside, whole, or nothing.
                        assert_eq!(answer["content"], "inside", "read outside the root: {answer}");
                        read += 1;
                    }
                    Err(ToolError::Refused(_)) => refused += 1,
                    Err(other) => panic!("{other:?}"),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = writer.join().unwrap();
        eprintln!("{swaps} swaps; {read} reads of the file, {refused} refused as a link out");
        assert!(read > 0 && refused > 0, "the race was run: {read} read, {refused} refused");
        clean(dir);
    }
}
