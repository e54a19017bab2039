//! The layering of `src/` as ARCHITECTURE.md states it, checked against the code: the table
//! of folders and what each may use is read from the document, every `crate::` path in a
//! folder's code is held against its row, HTTP crates stay in `api` and `bench`, the leaves
//! import no folder, nothing but `bench` reaches `serve`, and the pure crates keep their
//! short dependency lists. A new arrow that points up or sideways fails here before review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each folder of `src/` may use, as the document's table says.
#[derive(Debug)]
struct Layers {
    /// Folder → the crate-internal modules it may import (besides itself and the leaves).
    allowed: BTreeMap<String, BTreeSet<String>>,
    /// Modules any folder may use.
    leaves: BTreeSet<String>,
}

/// Backticked words of a cell: `` `a`, `b` `` → {a, b}.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(|word| word.trim_end_matches('/').to_owned()).collect()
}

/// Reads the `| folder | holds | may use |` table and the sentence naming the leaves.
fn layers(architecture: &str) -> Layers {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut in_table = false;
    for line in architecture.lines() {
        if line.starts_with("| folder | holds | may use |") {
            in_table = true;
            continue;
        }
        if in_table {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 || cells[1].starts_with("---") {
                continue;
            }
            let folder = ticked(cells[1]).into_iter().next().expect("a folder in backticks");
            rows.push((folder, cells[3].to_owned()));
        }
    }
    assert!(rows.len() >= 5, "ARCHITECTURE.md has no layering table: {rows:?}");
    let folders: Vec<String> = rows.iter().map(|(folder, _)| folder.clone()).collect();
    let mut allowed = BTreeMap::new();
    for (index, (folder, may_use)) in rows.iter().enumerate() {
        let uses: BTreeSet<String> = if may_use.contains("everything below") {
            // Below, but not the measuring folders that sit outside the stack.
            let below = rows[index + 1..].iter().filter(|(_, uses)| !uses.contains("the others"));
            below.map(|(folder, _)| folder.clone()).collect()
        } else if may_use.contains("public API of the others") {
            let others = folders.iter().filter(|other| *other != folder).cloned();
            others.chain(["serve".to_owned()]).collect()
        } else {
            ticked(may_use).into_iter().collect()
        };
        allowed.insert(folder.clone(), uses);
    }
    let sentence = architecture
        .split("\n\n")
        .find(|paragraph| paragraph.contains("may use the leaves"))
        .expect("ARCHITECTURE.md names the leaves (\"may use the leaves\")");
    let leaves: BTreeSet<String> = ticked(sentence.split(", and every").next().unwrap_or(sentence))
        .into_iter()
        .filter(|word| !["domain", "projections", "serve"].contains(&word.as_str()))
        .collect();
    Layers { allowed, leaves }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The shipped code of a file: without comments, and up to its test module (a `#[cfg(test)]`
/// item that is not a module still counts, to be safe).
fn code(text: &str) -> String {
    let mut shipped = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let test_module = lines.peek().is_some_and(|next| next.trim_start().starts_with("mod "));
        if trimmed.starts_with("#[cfg(test)]") && test_module {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        shipped.push_str(line.split(" // ").next().unwrap_or(line));
        shipped.push('\n');
    }
    shipped
}

/// The top-level modules a piece of code names as `crate::<module>`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for (index, _) in code.match_indices("crate::") {
        let preceded_by_ident = code[..index]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if preceded_by_ident {
            continue;
        }
        let rest = &code[index + "crate::".len()..];
        let module: String =
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !module.is_empty() {
            modules.insert(module);
        }
    }
    modules
}

/// Names HTTP server crates (`axum`, `hyper`, `hyper_util`, `tower`, `tower_http`) as paths.
fn http_crates(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for name in ["axum", "hyper", "hyper_util", "tower", "tower_http"] {
        for (index, _) in code.match_indices(&format!("{name}::")) {
            let preceded_by_ident = code[..index]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if !preceded_by_ident {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

/// Every breach of the layering in the source tree at `src`, as readable lines.
fn breaches(layers: &Layers, src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("under src").to_path_buf();
        let first = relative.components().next().expect("a component");
        let first = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        // Test modules may reach further than the code they test: they are not part of
        // the dependency graph the binary ships.
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let shipped = code(&text);
        let shown = format!("src/{}", relative.display());
        let used = crate_modules(&shipped);
        if let Some(allowed) = layers.allowed.get(&first) {
            for module in &used {
                let fine =
                    *module == first || allowed.contains(module) || layers.leaves.contains(module);
                if !fine {
                    found.push(format!("{shown}: `{first}` uses `crate::{module}`"));
                }
            }
            if first != "api" && first != "bench" {
                for name in http_crates(&shipped) {
                    found.push(format!("{shown}: `{first}` uses the HTTP server crate `{name}`"));
                }
            }
        } else if layers.leaves.contains(&first) {
            for module in used.iter().filter(|module| !layers.leaves.contains(*module)) {
                found.push(format!("{shown}: the leaf `{first}` uses `crate::{module}`"));
            }
            for name in http_crates(&shipped) {
                found.push(format!("{shown}: the leaf `{first}` uses `{name}`"));
            }
        }
    }
    found
}

/// A cycle among the folders' allowed arrows, if the table itself has one.
fn cycle(layers: &Layers) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        layers: &Layers,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in layers.allowed.get(node).into_iter().flatten() {
            if layers.allowed.contains_key(next)
                && let Some(cycle) = visit(next, layers, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    layers.allowed.keys().find_map(|folder| visit(folder, layers, &mut Vec::new(), &mut done))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_import_in_src_follows_the_layering_table_of_architecture_md() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let layers = layers(&architecture);
    assert!(layers.leaves.contains("config") && layers.leaves.contains("backoff"), "{layers:?}");
    assert_eq!(cycle(&layers), None, "the table's arrows go round in a circle");
    let found = breaches(&layers, &root().join("src"));
    assert!(found.is_empty(), "arrows that point up or sideways:\n{}", found.join("\n"));
}

#[test]
fn the_pure_crates_depend_on_no_runtime_and_no_service_client() {
    let allowed = ["domain", "serde", "serde_json", "uuid", "time", "thiserror", "utoipa"];
    for krate in ["domain", "projections"] {
        let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .expect("a [dependencies] table");
        for line in dependencies.lines().filter(|line| line.contains('=')) {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            assert!(allowed.contains(&name), "{krate} depends on {name}: it must stay pure");
        }
    }
}

#[test]
fn the_checker_reports_an_arrow_up_a_sideways_one_and_http_below_api() {
    let table = "\
| folder | holds | may use |
|---|---|---|
| `api/` | routes | everything below |
| `agents/` | agents | `missions`, `llm`, `eventlog` |
| `missions/` | queue | `eventlog` |
| `llm/` | gateway | `eventlog` |
| `eventlog/` | store | `domain`, `projections` |
| `bench/` | benches | the public API of the others |

Besides these, any folder may use the leaves `config` and `backoff`, and every folder may use \
the `domain` crate.
";
    let layers = layers(table);
    assert_eq!(layers.allowed["api"].len(), 4, "{layers:?}");
    assert_eq!(layers.leaves, BTreeSet::from(["config".to_owned(), "backoff".to_owned()]));
    let dir = std::env::temp_dir().join(format!("layering-{}", uuid::Uuid::new_v4().simple()));
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("llm/limits.rs", "use crate::missions::backoff::Backoff;\nuse crate::config::X;\n");
    write("eventlog/feed.rs", "use axum::extract::ws::Utf8Bytes;\n// crate::api in a comment\n");
    write("agents/replay.rs", "fn f() { crate::serve::start(); }\n");
    write("agents/tools.rs", "#[cfg(test)]\nmod tests { fn f() { axum::serve(); } }\n");
    write("config.rs", "use crate::eventlog::store;\n");
    let found = breaches(&layers, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        found,
        [
            "src/agents/replay.rs: `agents` uses `crate::serve`",
            "src/config.rs: the leaf `config` uses `crate::eventlog`",
            "src/eventlog/feed.rs: `eventlog` uses the HTTP server crate `axum`",
            "src/llm/limits.rs: `llm` uses `crate::missions`",
        ]
    );
    let circular = layers_with_cycle();
    assert!(cycle(&circular).is_some());
}

fn layers_with_cycle() -> Layers {
    let mut allowed = BTreeMap::new();
    allowed.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    allowed.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    Layers { allowed, leaves: BTreeSet::new() }
}
