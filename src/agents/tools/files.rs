//! Reading under an allowed root: `read_file`, `list_dir`, `search_text`. Every path is
//! relative to the root; an absolute path or one with a `..` part is refused outright, and
//! what a path names is resolved (symbolic links followed) and must still lie under the root,
//! so a link pointing out is refused too. Each answer is bounded (bytes, entries, matches,
//! files visited).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{RESULT_BYTES_MAX, Tool, ToolError, capped};
use crate::llm::ToolSpec;

pub const LIST_ENTRIES_MAX: usize = 1_000;
pub const SEARCH_MATCHES_MAX: usize = 200;
pub const SEARCH_FILES_MAX: usize = 10_000;
/// Files larger than this are not searched.
pub const SEARCH_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The folder an agent may read under, resolved once.
#[derive(Debug, Clone)]
pub struct Root(Arc<PathBuf>);

impl Root {
    pub fn new(path: impl AsRef<Path>) -> std::io::Result<Root> {
        Ok(Root(Arc::new(std::fs::canonicalize(path)?)))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// What `relative` names under the root, or why it may not be used.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf, ToolError> {
        let refuse = |why: &str| Err(ToolError::Refused(format!("{relative:?}: {why}")));
        if relative.contains('\0') {
            return refuse("not a path");
        }
        let path = Path::new(relative);
        if path.is_absolute() || relative.starts_with('~') {
            return refuse("a path is relative to the agent's root");
        }
        if path.components().any(|part| matches!(part, Component::ParentDir | Component::Prefix(_)))
        {
            return refuse("a path may not leave the agent's root");
        }
        let joined = self.0.join(path);
        let resolved = std::fs::canonicalize(&joined)
            .map_err(|error| ToolError::Failed(format!("{relative:?}: {error}")))?;
        if !resolved.starts_with(self.0.as_path()) {
            return refuse("it leads out of the agent's root (a symbolic link)");
        }
        Ok(resolved)
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(self.0.as_path()).unwrap_or(path).to_string_lossy().into_owned()
    }
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
            let path = root.resolve(arguments["path"].as_str().unwrap_or_default())?;
            let (head, size) = read_head(&path)?;
            let (content, truncated) = capped(&String::from_utf8_lossy(&head));
            let truncated = truncated || size > head.len() as u64;
            Ok(
                json!({ "path": root.relative(&path), "content": content, "truncated": truncated, "bytes": size }),
            )
        })
    }
}

/// The first [`RESULT_BYTES_MAX`] bytes of a file and its whole size, read from one open
/// descriptor: a large file costs what is shown, never its size in memory.
fn read_head(path: &Path) -> Result<(Vec<u8>, u64), ToolError> {
    use std::io::Read;
    let failed = |error: std::io::Error| ToolError::Failed(error.to_string());
    let file = std::fs::File::open(path).map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    let mut head = Vec::with_capacity(RESULT_BYTES_MAX.min(size as usize));
    file.take(RESULT_BYTES_MAX as u64).read_to_end(&mut head).map_err(failed)?;
    Ok((head, size))
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
            let path = root.resolve(arguments["path"].as_str().unwrap_or_default())?;
            let mut entries = Vec::new();
            let reading =
                std::fs::read_dir(&path).map_err(|error| ToolError::Failed(error.to_string()))?;
            let mut more = false;
            for entry in reading.filter_map(Result::ok) {
                if entries.len() == LIST_ENTRIES_MAX {
                    more = true;
                    break;
                }
                let kind = match entry.file_type() {
                    Ok(kind) if kind.is_symlink() => "link",
                    Ok(kind) if kind.is_dir() => "dir",
                    _ => "file",
                };
                let size = entry.metadata().map(|meta| meta.len()).unwrap_or(0);
                entries.push(json!({ "name": entry.file_name().to_string_lossy(), "kind": kind, "bytes": size }));
            }
            entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            Ok(json!({ "path": root.relative(&path), "entries": entries, "truncated": more }))
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
            let needle = arguments["text"].as_str().unwrap_or_default().to_owned();
            if needle.is_empty() {
                return Err(ToolError::Refused("\"text\" must not be empty".into()));
            }
            let start = root.resolve(arguments["path"].as_str().unwrap_or("."))?;
            let (mut matches, mut pending, mut visited, mut more) =
                (Vec::new(), vec![start], 0usize, false);
            while let Some(path) = pending.pop() {
                // Links are not followed in the walk: what they lead to may lie outside.
                let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
                if meta.is_dir() {
                    if let Ok(reading) = std::fs::read_dir(&path) {
                        pending.extend(reading.filter_map(Result::ok).map(|entry| entry.path()));
                    }
                    continue;
                }
                if !meta.is_file() || meta.len() > SEARCH_FILE_BYTES_MAX {
                    continue;
                }
                visited += 1;
                if visited > SEARCH_FILES_MAX {
                    more = true;
                    break;
                }
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                for (n, line) in text.lines().enumerate().filter(|(_, line)| line.contains(&needle))
                {
                    if matches.len() == SEARCH_MATCHES_MAX {
                        more = true;
                        break;
                    }
                    let (line, _) = capped(line);
                    matches.push(json!({ "path": root.relative(&path), "line": n + 1, "text": line.chars().take(500).collect::<String>() }));
                }
                if more {
                    break;
                }
            }
            Ok(json!({ "matches": matches, "truncated": more }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's peak resident memory (`VmHWM`), in KiB.
    fn peak_resident_kib() -> i64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

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

    #[tokio::test]
    async fn a_huge_file_is_read_only_as_far_as_is_shown_and_a_nul_never_reaches_the_record() {
        // Given a 1 GiB file (sparse: it takes no disk) and a file holding NULs.
        let (dir, root) = scratch();
        let huge = std::fs::File::create(dir.join("huge.bin")).unwrap();
        huge.set_len(1 << 30).unwrap();
        std::fs::write(dir.join("nul.txt"), "before\0after").unwrap();
        let registry = super::super::Registry::default().with(ReadFile(root.clone()));

        // When the model reads them.
        let peak_before = peak_resident_kib();
        let read = registry.call("read_file", &json!({ "path": "huge.bin" })).await.unwrap();
        let grew_kib = peak_resident_kib() - peak_before;
        let nul = registry.call("read_file", &json!({ "path": "nul.txt" })).await.unwrap();

        // Then the huge one is cut at the result bound and says how big it is, and the NUL is
        // replaced, so the call can be recorded.
        assert_eq!(
            (read["truncated"].as_bool(), read["bytes"].as_u64()),
            (Some(true), Some(1 << 30))
        );
        assert!(read["content"].as_str().unwrap().len() <= RESULT_BYTES_MAX);
        assert!(grew_kib < 256 * 1024, "reading grew the process's peak by {grew_kib} KiB");
        assert_eq!(nul["content"], "before\u{fffd}after");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(dir.with_extension("outside")).unwrap();
    }

    #[tokio::test]
    async fn escapes_from_the_root_are_refused_and_nothing_outside_is_read() {
        let (dir, root) = scratch();
        for escape in [
            "../brain-root.outside/secret.txt",
            "/etc/passwd",
            "src/../../x",
            "out/secret.txt",
            "secret-link",
            "~/x",
        ] {
            let outcome = ReadFile(root.clone()).run(json!({ "path": escape })).await;
            assert!(matches!(outcome, Err(ToolError::Refused(_))), "{escape}: {outcome:?}");
        }
        let read = ReadFile(root.clone()).run(json!({ "path": "src/main.rs" })).await.unwrap();
        assert_eq!(read["content"], "fn main() {}\n// needle here\n");
        let found = SearchText(root.clone()).run(json!({ "text": "needle" })).await.unwrap();
        assert_eq!(
            found["matches"].as_array().unwrap().len(),
            1,
            "the links are not followed: {found}"
        );
        assert_eq!(found["matches"][0]["path"], "src/main.rs");
        let listed = ListDir(root.clone()).run(json!({ "path": "." })).await.unwrap();
        let names: Vec<&str> = listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["out", "secret-link", "src"]);
        let _ = std::fs::remove_dir_all(dir.with_extension("outside"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
