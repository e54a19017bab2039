//! The scan's own checks: what it works out, and what it reports rather than skips.

use std::collections::BTreeSet;

use super::*;

fn scan_one(source: &str) -> Scan {
    scan(&[("page.js".to_owned(), source.to_owned())])
}

fn texts(scan: &Scan) -> BTreeSet<String> {
    scan.calls.iter().map(|c| format!("{} {}", c.method, c.path_text())).collect()
}

fn set(texts: &[&str]) -> BTreeSet<String> {
    texts.iter().map(|t| (*t).to_owned()).collect()
}

#[test]
fn literal_template_and_query_paths_are_worked_out() {
    let found = scan_one(
        "const a = await api('GET', '/api/missions' + query({ limit: 5 }));\n\
         await api('POST', `/api/missions/${encodeURIComponent(id)}/cancel`, {});\n\
         const r = /x\\/y/.test(s) ? 1 / 2 : 3; // '/api/not/a/call'\n\
         const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';\n\
         new WebSocket(`${scheme}//${location.host}/ws/events${query({ from: 1 })}`);\n",
    );
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let expected = ["GET /api/missions", "GET /ws/events", "POST /api/missions/{…}/cancel"];
    assert_eq!(texts(&found), set(&expected));
}

#[test]
fn a_parameter_is_followed_to_every_caller_with_method_and_path_together() {
    let found = scan_one(
        "function change(method, path) { return api(method, path, {}); }\n\
         change('PUT', '/api/llm/config');\n\
         change('POST', '/api/llm/config/reset');\n",
    );
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(texts(&found), set(&["POST /api/llm/config/reset", "PUT /api/llm/config"]));
}

#[test]
fn the_fetch_inside_the_helper_is_followed_to_the_helpers_callers_in_other_modules() {
    let lib = "export async function api(method, path) {\n\
               const init = { method, headers: {} };\n\
               return fetch(path, init);\n\
               }\n";
    let page = "import { api } from './lib.js';\n\
                function act(path) { return api('POST', `/api/missions/${id}/${path}`); }\n\
                act('cancel');\n\
                act('retry');\n";
    let found =
        scan(&[("lib.js".to_owned(), lib.to_owned()), ("page.js".to_owned(), page.to_owned())]);
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let expected = ["POST /api/missions/{…}/cancel", "POST /api/missions/{…}/retry"];
    assert_eq!(texts(&found), set(&expected));
    let through_fetch: Vec<&Vec<String>> =
        found.calls.iter().map(|c| &c.at).filter(|at| at[0] == "lib.js:3").collect();
    assert_eq!(
        through_fetch,
        [&["lib.js:3", "page.js:2", "page.js:3"], &["lib.js:3", "page.js:2", "page.js:4"]]
    );
}

#[test]
fn what_cannot_be_worked_out_is_a_problem_not_a_skip() {
    let found = scan_one(
        "function go(path) { return api('GET', path); }\n\
         const f = go; f('/api/x');\n\
         api(verb(), '/api/y');\n\
         const link = '/api/nowhere';\n\
         new XMLHttpRequest();\n\
         let target = '/api/z'; api('GET', target);\n",
    );
    let problems = found.problems.join("\n");
    assert!(problems.contains("`go` is passed as a value"), "{problems}");
    assert!(problems.contains("page.js:3: cannot work out"), "{problems}");
    assert!(problems.contains("\"/api/nowhere\""), "{problems}");
    assert!(problems.contains("XMLHttpRequest"), "{problems}");
    assert!(problems.contains("`target`, a value known only at run time"), "{problems}");
}
