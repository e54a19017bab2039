use proptest::prelude::*;

use super::*;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|arg| (*arg).to_owned()).collect()
}

fn refused(program: &str, list: &[&str]) -> String {
    match check(program, &args(list)) {
        Err(why) => why,
        Ok(words) => panic!("{program} {list:?} was allowed (words {words:?})"),
    }
}

fn allowed(program: &str, list: &[&str]) -> Vec<String> {
    let given = args(list);
    match check(program, &given) {
        Ok(words) => words.into_iter().map(str::to_owned).collect(),
        Err(why) => panic!("{program} {list:?} was refused: {why}"),
    }
}

#[test]
fn every_declared_table_reads_and_declares_each_spelling_once() {
    for policy in programs::POLICIES {
        let tables = std::iter::once(("", &policy.top))
            .chain(policy.subcommands.iter().map(|(n, o)| (*n, o)));
        for (sub, options) in tables {
            let table = table(options);
            let mut seen = std::collections::BTreeSet::new();
            for opt in &table.options {
                let names = opt
                    .short
                    .iter()
                    .map(|c| format!("-{c}"))
                    .chain(opt.long.iter().map(|l| format!("--{l}")));
                for name in names {
                    assert!(
                        seen.insert(name.clone()),
                        "{} {sub}: {name} is declared twice",
                        policy.program
                    );
                }
            }
        }
    }
    assert_eq!(programs(), ["cargo", "cat", "git", "grep", "ls", "python3", "rg"]);
}

#[test]
fn the_escapes_through_git_are_refused_in_every_spelling() {
    for list in [
        &["-c", "alias.x=!sh -c id", "x"][..],
        &["-calias.x=!sh", "x"],
        &["--config-env=alias.x=EVIL", "x"],
        &["--exec-path=.", "status"],
        &["--exec-path", "status"],
        &["-C", "..", "status"],
        &["--git-dir=../other/.git", "log"],
        &["-p", "log"],
        &["grep", "-O", "needle"],
        &["grep", "-Ocat", "needle"],
        &["grep", "-O=cat", "needle"],
        &["grep", "-iO", "needle"],
        &["grep", "-niOcat", "needle"],
        &["grep", "--open-files-in-pager", "needle"],
        &["grep", "--open-files-in-pager=cat", "needle"],
        &["grep", "--open", "needle"],
        &["grep", "--open-files", "needle"],
        &["grep", "--textconv", "needle"],
        &["log", "--ext-diff"],
        &["log", "--ext"],
        &["diff", "--textconv"],
        &["diff", "--textc"],
        &["log", "--output=stolen"],
        &["show", "--output", "stolen"],
        &["cat-file", "--textconv", "HEAD:a"],
        &["cat-file", "--filters", "HEAD:a"],
        &["log", "--upload-pack=sh"],
        &["config", "core.pager", "sh"],
        &["submodule", "foreach", "id"],
        &["-c"],
        &[],
        &["--", "status"],
        &["branch", "new-branch"],
        &["branch", "-D", "main"],
        &["branch", "--", "new-branch"],
        &["tag", "v1"],
        &["tag", "-d", "v1"],
        &["log", "-n", "-Ocat"],
        &["grep", "-e", "-O"],
    ] {
        refused("git", list);
    }
    assert!(refused("git", &["-c", "a=b", "log"]).contains("a shell"));
    assert!(refused("git", &["grep", "-iOcat", "x"]).contains("-O is not allowed: it opens"));
    assert!(refused("git", &["grep", "--open", "x"]).contains("--open is not allowed"));
}

#[test]
fn git_reads_with_its_everyday_options() {
    allowed("git", &["log", "-p", "-n", "3"]);
    allowed("git", &["log", "-n3", "--stat", "--format=%H %s", "--", "src"]);
    allowed("git", &["log", "-3", "--oneline"]);
    allowed("git", &["-P", "log", "--since=2.weeks", "HEAD~3..HEAD"]);
    allowed("git", &["diff", "-c"]);
    allowed("git", &["diff", "--cached", "-U5", "--stat"]);
    allowed("git", &["status", "--porcelain=v2", "-uno"]);
    allowed("git", &["grep", "-n", "needle"]);
    allowed("git", &["grep", "-in", "-2", "needle", "--", "src"]);
    allowed("git", &["show", "HEAD:README.md"]);
    allowed("git", &["branch", "-a", "--contains", "main"]);
    allowed("git", &["tag", "-l"]);
    allowed("git", &["blame", "-L", "1,20", "src/main.rs"]);
    // A pattern that looks like an option, glued to `-e`: a value, for git as for the policy.
    assert_eq!(allowed("git", &["grep", "-e-O", "--", "x"]), ["-O", "x"]);
}

#[test]
fn the_escapes_through_other_programs_are_refused() {
    for (program, list) in [
        ("rg", &["--pre", "sh", "x"][..]),
        ("rg", &["--pre=sh", "x"]),
        ("rg", &["--pre-glob=*", "x"]),
        ("rg", &["-z", "x"]),
        ("rg", &["-iz", "x"]),
        ("rg", &["--search-zip", "x"]),
        ("rg", &["--hostname-bin=sh", "x"]),
        ("python3", &["-c", "import os; os.system('id')"]),
        ("python3", &["-cimport os"]),
        ("python3", &["-Bc", "print(1)"]),
        ("python3", &["-m", "http.server"]),
        ("python3", &["-mhttp.server"]),
        ("python3", &["-m", "pip", "install", "x"]),
        ("cargo", &["install", "ripgrep"]),
        ("cargo", &["--config", "build.rustc-wrapper='sh'", "build"]),
        ("cargo", &["build", "--config=x"]),
        ("cargo", &["build", "-Zunstable-options"]),
        ("cargo", &["build", "-rZx"]),
        ("cargo", &["+nightly", "build"]),
        ("cargo", &["build", "--manifest-path", "other/Cargo.toml"]),
        ("cargo", &["-C", "..", "build"]),
        ("cargo", &["doc", "--open"]),
        ("cargo", &["publish"]),
        ("cargo", &[]),
        ("ls", &["--hyperlink"]),
        ("cat", &["--unknown"]),
        ("grep", &["-e", "-x", "notes.txt"]),
        ("wc", &["-l", "notes.txt"]),
        ("wc", &["--", "-l"]),
        ("find", &[".", "-exec", "sh", ";"]),
    ] {
        refused(program, list);
    }
    assert!(refused("python3", &["-c", "x"]).contains("run a script"));
    assert!(refused("wc", &["-l"]).contains("no argument policy"));
}

#[test]
fn the_other_programs_run_with_their_everyday_options() {
    allowed("ls", &["-la", "--color=never", "src"]);
    allowed("cat", &["-n", "notes.txt"]);
    allowed("grep", &["-rn", "-C2", "--include=*.rs", "needle", "."]);
    allowed("grep", &["-5", "needle", "notes.txt"]);
    allowed("rg", &["-i", "-A3", "--glob", "*.rs", "needle"]);
    allowed("cargo", &["test", "-p", "brain", "--lib", "policy", "--", "--nocapture"]);
    allowed("cargo", &["build", "--release", "-j2", "--offline"]);
    allowed("cargo", &["-q", "check", "--all-targets"]);
    allowed("python3", &["-B", "script.py", "-c", "x"]);
    allowed("python3", &["-m", "pytest", "-k", "slow", "tests"]);
    allowed("python3", &["-mpytest", "-x"]);
    allowed("wc", &["notes.txt", "-"]);
}

#[test]
fn option_values_are_handed_back_for_the_path_rules() {
    assert_eq!(allowed("grep", &["-f/etc/passwd", "x"]), ["/etc/passwd", "x"]);
    assert_eq!(allowed("grep", &["--file=../secret", "x"]), ["../secret", "x"]);
    assert_eq!(allowed("git", &["diff", "--relative=../x"]), ["../x"]);
    assert_eq!(allowed("cargo", &["build", "--target-dir", "/tmp/t"]), ["/tmp/t"]);
    // After the script, everything is the script's, and the path rules see it.
    assert_eq!(allowed("python3", &["run.py", "--out=/etc/x"]), ["run.py", "--out=/etc/x"]);
}

/// git's own reading of arguments, for the options that run a program: its subcommands take
/// an unambiguous prefix of a long option unless the word is an option of its own, and read a
/// cluster of short options letter by letter until one that takes a value. Written apart from
/// the policy's tables, from `git grep -h` and the manual.
fn git_runs_a_program(list: &[String]) -> Option<String> {
    const DANGEROUS_LONG: &[&str] = &[
        "open-files-in-pager",
        "textconv",
        "ext-diff",
        "ext-grep",
        "output",
        "filters",
        "upload-pack",
        "receive-pack",
        "exec",
        "exec-path",
        "config-env",
    ];
    // Real options of these subcommands that are also prefixes of a dangerous one.
    const EXACT: &[&str] = &["text"];
    const GREP_VALUE_LETTERS: &str = "CBAfem";
    let mut subcommand: Option<&str> = None;
    let mut at = 0;
    while at < list.len() {
        let arg = list[at].as_str();
        at += 1;
        if arg == "--" {
            return None;
        }
        let Some(option) = arg.strip_prefix('-').filter(|o| !o.is_empty()) else {
            subcommand.get_or_insert(arg);
            continue;
        };
        if subcommand.is_none() && (arg == "-c" || arg.starts_with("-c") || arg.starts_with("-C")) {
            return Some(arg.to_owned());
        }
        if let Some(long) = option.strip_prefix('-') {
            let name = long.split_once('=').map_or(long, |(name, _)| name);
            let abbreviates =
                DANGEROUS_LONG.iter().any(|d| d.starts_with(name)) && !name.is_empty();
            if abbreviates && !EXACT.contains(&name) {
                return Some(arg.to_owned());
            }
            continue;
        }
        if subcommand == Some("grep") {
            for letter in option.chars() {
                if letter == 'O' {
                    return Some(arg.to_owned());
                }
                if GREP_VALUE_LETTERS.contains(letter) {
                    break;
                }
            }
        }
    }
    None
}

/// rg's reading: `--pre`, `--hostname-bin` and `-z`/`--search-zip` run programs; a cluster is
/// read until a letter that takes a value.
fn rg_runs_a_program(list: &[String]) -> Option<String> {
    const VALUE_LETTERS: &str = "ABCdEefgjMmrtT";
    for arg in list {
        if arg == "--" {
            return None;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let name = long.split_once('=').map_or(long, |(name, _)| name);
            if ["pre", "hostname-bin", "search-zip"].contains(&name) {
                return Some(arg.clone());
            }
        } else if let Some(cluster) = arg.strip_prefix('-') {
            for letter in cluster.chars() {
                if letter == 'z' {
                    return Some(arg.clone());
                }
                if VALUE_LETTERS.contains(letter) {
                    break;
                }
            }
        }
    }
    None
}

/// python3's reading: `-c` runs its value; the options end at the script or `-m`'s module.
fn python_runs_given_code(list: &[String]) -> Option<String> {
    for arg in list {
        let cluster = arg.strip_prefix('-').filter(|c| !c.is_empty() && *c != "-")?;
        for letter in cluster.chars() {
            match letter {
                'c' => return Some(arg.clone()),
                'm' => return None,
                'W' | 'X' => break,
                _ => {}
            }
        }
    }
    None
}

fn token() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "-c",
        "-calias.x=!sh",
        "alias.x=!sh",
        "--config-env=a=B",
        "--exec-path=.",
        "--exec-path",
        "-C",
        "-C3",
        "-O",
        "-Ocat",
        "-iO",
        "-nO",
        "-O=cat",
        "-e",
        "-e-O",
        "-eO",
        "-nOcat",
        "--open-files-in-pager",
        "--open-files-in-pager=cat",
        "--open",
        "--o",
        "--textconv",
        "--text",
        "--ext-diff",
        "--ext",
        "--output=x",
        "--output",
        "--",
        "-",
        "--upload-pack=x",
        "--pre",
        "--pre=sh",
        "-z",
        "-iz",
        "--search-zip",
        "--hostname-bin=sh",
        "-A",
        "-A3z",
        "-m",
        "-mpytest",
        "pytest",
        "-Bc",
        "-W",
        "-Wc",
        "script.py",
        "grep",
        "log",
        "diff",
        "show",
        "status",
        "branch",
        "cat-file",
        "-n",
        "-i",
        "-p",
        "-3",
        "needle",
        "HEAD",
        "--stat",
        "--cached",
        "-a",
        "-f",
    ])
    .prop_map(str::to_owned);
    prop_oneof![3 => known, 1 => "-{0,2}[a-zA-Z0-9=!.]{0,6}"]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    /// Any text at all, multi-byte letters and control characters included, gets an answer.
    #[test]
    fn the_parser_answers_any_text(list in prop::collection::vec(any::<String>(), 0..6)) {
        for program in ["git", "cargo", "python3", "rg", "ls", "wc"] {
            let _ = check(program, &list);
            let dashed: Vec<String> = list.iter().map(|arg| format!("-{arg}")).collect();
            let refused = check(program, &dashed).is_err();
            if program == "wc" && dashed.iter().any(|arg| arg != "-") {
                prop_assert!(refused, "wc {dashed:?}: a program without a policy takes no option");
            }
        }
    }

    /// Whatever the list, each policy answers (never panics), and what git, rg or python3
    /// accept holds no option that would make them run a program, under any spelling.
    #[test]
    fn no_accepted_list_runs_a_program(list in prop::collection::vec(token(), 0..7)) {
        for program in ["git", "rg", "python3", "cargo", "grep", "ls", "cat", "wc"] {
            let Ok(words) = check(program, &list) else { continue };
            for word in words {
                prop_assert!(list.iter().any(|arg| arg.ends_with(word)), "{word:?} from {list:?}");
            }
            let escape = match program {
                "git" => git_runs_a_program(&list),
                "rg" => rg_runs_a_program(&list),
                "python3" => python_runs_given_code(&list),
                _ => None,
            };
            prop_assert!(escape.is_none(), "{program} {list:?} was allowed, with {escape:?}");
        }
    }
}
