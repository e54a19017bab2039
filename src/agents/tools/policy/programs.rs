//! The policies of the programs people allow, and the environment each runs with.
//!
//! - `git`: only subcommands that read (`status`, `log`, `diff`, `show`, `grep`, ...), none of
//!   the options that run a program (`-c`, `--config-env`, `--exec-path`, `grep -O`,
//!   `--ext-diff`, `--textconv`, `cat-file --filters`) or point git elsewhere (`-C`,
//!   `--git-dir`, `--work-tree`); `branch` and `tag` list only (a name would create one). Its
//!   configuration is only the repository's (no system or user file) with the settings that
//!   run programs overridden on the command-line level: no fsmonitor, no hooks, no pager, no
//!   transport.
//! - `cargo`: building, checking, testing and reading metadata; no `--config`, `-Z` or
//!   `--manifest-path` (a configuration can name any program), no `install`, `publish` or
//!   anything that changes the manifest or reaches a registry by itself. A build runs the
//!   crate's build scripts and a test its tests: code of the working folder, run inside the
//!   sandbox (that is what contains it).
//! - `python3`: running Python is running code, by definition; the sandbox contains it. The
//!   policy keeps the code to scripts already in the working folder: no `-c` (code in the
//!   argument, which the model writes), `-m` only for the test runners.
//! - `ls`, `cat`, `grep`: their read-only options. `rg`: without `--pre`, `--hostname-bin`
//!   and `--search-zip`, which run programs.

use std::path::Path;

use super::{Options, Policy};

pub const POLICIES: &[Policy] = &[GIT, CARGO, PYTHON3, LS, CAT, GREP, RG];

const READS_A_PROGRAM: &str = "it runs a program of the repository's configuration";

const GIT: Policy = Policy {
    program: "git",
    top: Options {
        allowed: &["-P|--no-pager --no-optional-locks --literal-pathspecs --no-replace-objects"],
        refused: &[
            (
                "-c= --config-env=",
                "it sets configuration, and an alias such as alias.x=!sh is a shell",
            ),
            ("--exec-path?", "it names where git finds the programs it runs"),
            (
                "-C= --git-dir= --work-tree= --namespace=",
                "it points git outside the working folder",
            ),
            ("-p|--paginate", "it runs a pager"),
        ],
        positionals: false,
        ..Options::NONE
    },
    subcommands: &[
        ("status", Options { allowed: &[GIT_STATUS], ..GIT_SUB }),
        (
            "log",
            Options {
                allowed: &[GIT_DIFF, GIT_REVS, GIT_PEOPLE, GIT_FORMAT, "-n|--max-count= --follow"],
                numeric: true,
                ..GIT_SUB
            },
        ),
        ("show", Options { allowed: &[GIT_DIFF, GIT_REVS, GIT_PEOPLE, GIT_FORMAT], ..GIT_SUB }),
        (
            "diff",
            Options {
                allowed: &[
                    GIT_DIFF,
                    "--cached --staged --merge-base --no-index --exit-code --quiet",
                ],
                ..GIT_SUB
            },
        ),
        (
            "grep",
            Options { allowed: &[GIT_GREP], refused: GIT_GREP_REFUSED, numeric: true, ..GIT_SUB },
        ),
        ("blame", Options { allowed: &[GIT_BLAME], ..GIT_SUB }),
        ("ls-files", Options { allowed: &[GIT_LS_FILES], ..GIT_SUB }),
        ("ls-tree", Options { allowed: &[GIT_LS_TREE], ..GIT_SUB }),
        ("rev-parse", Options { allowed: &[GIT_REV_PARSE], ..GIT_SUB }),
        ("describe", Options { allowed: &[GIT_DESCRIBE], ..GIT_SUB }),
        (
            "shortlog",
            Options {
                allowed: &[
                    GIT_REVS,
                    "-c|--committer -n|--numbered -s|--summary -e|--email -w? --group= --format=",
                ],
                ..GIT_SUB
            },
        ),
        (
            "cat-file",
            Options {
                allowed: &[
                    "-e -p -t -s -Z --batch? --batch-check? --batch-all-objects --buffer --unordered --allow-unknown-type --use-mailmap --follow-symlinks",
                ],
                ..GIT_SUB
            },
        ),
        (
            "rev-list",
            Options {
                allowed: &[
                    GIT_REVS,
                    GIT_PEOPLE,
                    GIT_FORMAT,
                    "-n|--max-count= --count --objects --parents --children --timestamp --left-only --right-only --max-parents= --min-parents=",
                ],
                numeric: true,
                ..GIT_SUB
            },
        ),
        (
            "branch",
            Options {
                allowed: &[GIT_BRANCH],
                refused: GIT_BRANCH_REFUSED,
                positionals: false,
                ..GIT_SUB
            },
        ),
        (
            "tag",
            Options {
                allowed: &[GIT_TAG],
                refused: GIT_TAG_REFUSED,
                positionals: false,
                ..GIT_SUB
            },
        ),
    ],
};

/// What every git subcommand refuses, whatever it is: the options that run programs.
const GIT_SUB: Options = Options {
    refused: &[
        ("--ext-diff --textconv --filters", READS_A_PROGRAM),
        ("--output=", "it writes a file"),
        ("--open-files-in-pager?", "it opens what it found in a program of its choosing"),
        ("--exec= --upload-pack= --receive-pack=", "it runs a program"),
    ],
    ..Options::NONE
};

const GIT_STATUS: &str = "-v|--verbose -s|--short -b|--branch --show-stash --ahead-behind \
    --no-ahead-behind --porcelain? --long -z|--null -u|--untracked-files? --ignored? \
    --ignore-submodules? --column? --no-column --renames --no-renames -M|--find-renames?";

const GIT_DIFF: &str = "-p|-u|--patch -s|--no-patch --raw --stat? --numstat --shortstat \
    --dirstat? --summary --name-only --name-status --patch-with-stat -U|--unified? \
    -W|--function-context --color? --no-color --color-words? --word-diff? --word-diff-regex= \
    -w|--ignore-all-space -b|--ignore-space-change --ignore-blank-lines --ignore-space-at-eol \
    -M|--find-renames? -C|--find-copies? -D|--irreversible-delete --diff-filter= -R \
    --relative? --no-relative -a|--text --minimal --patience --histogram --diff-algorithm= \
    --abbrev? --full-index --binary --check --no-ext-diff --no-textconv -z -c --cc";

/// Who wrote or committed: not in `shortlog`, where `--committer` is a flag of its own.
const GIT_PEOPLE: &str = "--author= --committer=";

const GIT_REVS: &str = "--skip= --since|--after= --until|--before= --grep= -i|--regexp-ignore-case -E|--extended-regexp -F|--fixed-strings \
    -P|--perl-regexp --all-match --invert-grep --all --branches? --tags? --remotes? \
    --exclude= --no-merges --merges --first-parent --ancestry-path --reverse --topo-order \
    --date-order --author-date-order --cherry-pick --cherry-mark --left-right --boundary \
    -S= -G= --pickaxe-regex --pickaxe-all --full-history --simplify-merges --dense --sparse";

const GIT_FORMAT: &str = "--oneline --graph --decorate? --no-decorate --pretty? --format= \
    --abbrev-commit --no-abbrev-commit --date= --relative-date --source -m --remerge-diff";

const GIT_GREP: &str = "--cached --untracked --no-index --index --exclude-standard \
    --no-exclude-standard -v|--invert-match -i|--ignore-case -w|--word-regexp -a|--text -I \
    -r|--recursive --no-recursive --max-depth= -E|--extended-regexp -G|--basic-regexp \
    -F|--fixed-strings -P|--perl-regexp -n|--line-number --column -h -H --full-name \
    -l|--files-with-matches|--name-only -L|--files-without-match -z|--null -o|--only-matching \
    -c|--count --color? --no-color --break --heading -C|--context= -B|--before-context= \
    -A|--after-context= --threads= -p|--show-function -W|--function-context -f= -e= --and \
    --or --not -q|--quiet --all-match -m|--max-count=";
const GIT_GREP_REFUSED: &[(&str, &str)] = &[
    ("-O|--open-files-in-pager?", "it opens what it found in a program of its choosing"),
    ("--textconv", READS_A_PROGRAM),
    ("--ext-grep", "it runs an outside grep"),
];

const GIT_BLAME: &str = "--incremental -b --root --show-stats -f|--show-name \
    -n|--show-number -p|--porcelain --line-porcelain -c -t -l -s -e|--show-email -w \
    --ignore-rev= --minimal -C? -M? -L= --abbrev? --date= --color-lines --color-by-age";

const GIT_LS_FILES: &str = "-z -t -v -f -c|--cached -d|--deleted -m|--modified -o|--others \
    -i|--ignored -s|--stage -k|--killed -u|--unmerged --directory --no-empty-directory --eol \
    -x|--exclude= --exclude-standard --full-name --error-unmatch --abbrev? --deduplicate \
    --format=";

const GIT_LS_TREE: &str = "-d -r -t -z -l|--long --name-only --name-status --object-only \
    --full-name --full-tree --format= --abbrev?";

const GIT_REV_PARSE: &str = "--verify -q|--quiet --short? --abbrev-ref? --symbolic \
    --symbolic-full-name --show-toplevel --show-prefix --show-cdup --git-dir --git-common-dir \
    --absolute-git-dir --is-inside-work-tree --is-inside-git-dir --is-bare-repository \
    --is-shallow-repository --all --branches? --tags? --remotes? --revs-only --no-revs \
    --flags --no-flags --sq";

const GIT_DESCRIBE: &str = "--contains --all --tags --long --first-parent --abbrev? \
    --exact-match --candidates= --match= --exclude= --always --dirty? --broken?";

const GIT_BRANCH: &str = "-v|--verbose -q|--quiet --color? --no-color -r|--remotes \
    --contains= --no-contains= --abbrev? -a|--all -l|--list --show-current --merged= \
    --no-merged= --column? --no-column --sort= --points-at= -i|--ignore-case --format= \
    --omit-empty";
const GIT_BRANCH_REFUSED: &[(&str, &str)] = &[(
    "-d|--delete -D -m|--move -M -c|--copy -C -f|--force -t|--track? --no-track \
     -u|--set-upstream-to= --unset-upstream --edit-description --create-reflog",
    "it changes the repository",
)];

const GIT_TAG: &str = "-l|--list -n? --contains= --no-contains= --merged= --no-merged= \
    --points-at= --sort= --format= --column? --no-column --color? -i|--ignore-case --omit-empty";
const GIT_TAG_REFUSED: &[(&str, &str)] = &[(
    "-d|--delete -v|--verify -a|--annotate -m|--message= -F|--file= --trailer= -e|--edit \
     -s|--sign --cleanup= -u|--local-user= -f|--force --create-reflog",
    "it changes the repository, or runs a signing program",
)];

const CARGO: Policy = Policy {
    program: "cargo",
    top: Options {
        allowed: &["-V|--version -v|--verbose -q|--quiet --color= --offline --frozen --locked"],
        refused: CARGO_REFUSED,
        positionals: false,
        ..Options::NONE
    },
    subcommands: &[
        ("check", CARGO_BUILDS),
        ("build", CARGO_BUILDS),
        ("clippy", CARGO_BUILDS),
        (
            "test",
            Options { allowed: &[CARGO_BUILD, "--no-run --no-fail-fast --doc"], ..CARGO_BUILDS },
        ),
        ("run", CARGO_BUILDS),
        (
            "doc",
            Options {
                allowed: &[CARGO_BUILD, "--no-deps --document-private-items"],
                refused: &[CARGO_REFUSED[0], CARGO_REFUSED[1], ("--open", "it opens a browser")],
                ..CARGO_BUILDS
            },
        ),
        (
            "metadata",
            Options {
                allowed: &[
                    CARGO_COMMON,
                    "--format-version= --no-deps --filter-platform= -F|--features= --all-features --no-default-features",
                ],
                ..CARGO_BUILDS
            },
        ),
        (
            "tree",
            Options {
                allowed: &[
                    CARGO_COMMON,
                    "-p|--package= --workspace -e|--edges= -i|--invert= --depth= --prefix= --no-dedupe -d|--duplicates --charset= -f|--format= --target= -F|--features= --all-features --no-default-features",
                ],
                ..CARGO_BUILDS
            },
        ),
        (
            "fmt",
            Options {
                allowed: &["--all --check -p|--package= -q|--quiet -v|--verbose --message-format="],
                ..CARGO_BUILDS
            },
        ),
        ("version", Options { allowed: &[CARGO_COMMON], ..CARGO_BUILDS }),
    ],
};

const CARGO_CONFIG: &str =
    "it sets configuration or unstable options, which can name a program to run";
const CARGO_MANIFEST: &str = "it names a manifest anywhere";
const CARGO_REFUSED: &[(&str, &str)] =
    &[("--config= -Z= -C=", CARGO_CONFIG), ("--manifest-path=", CARGO_MANIFEST)];
const CARGO_COMMON: &str = "-q|--quiet -v|--verbose --color= --offline --frozen --locked";
const CARGO_BUILD: &str = "-q|--quiet -v|--verbose --color= --offline --frozen --locked \
    -p|--package= --workspace --all --exclude= --lib --bins --bin= --tests --test= \
    --examples --example= --benches --bench= --all-targets -F|--features= --all-features \
    --no-default-features -r|--release --profile= -j|--jobs= --keep-going --target= \
    --target-dir= --message-format= --ignore-rust-version --timings?";
const CARGO_BUILDS: Options =
    Options { allowed: &[CARGO_BUILD], refused: CARGO_REFUSED, ..Options::NONE };

const PYTHON3: Policy = Policy {
    program: "python3",
    top: Options {
        allowed: &["-B -b -E -I -O -q -s -S -u -v -V|--version -h|--help -W= -m+"],
        refused: &[
            (
                "-c=",
                "it runs the code given in the argument; run a script of the working folder instead",
            ),
            ("-X= -i", "not needed to run a script"),
        ],
        stop_at_positional: true,
        values: &[("-m", &["pytest", "unittest", "doctest"])],
        ..Options::NONE
    },
    subcommands: &[],
};

const LS: Policy = Policy {
    program: "ls",
    top: Options {
        allowed: &["-a|--all -A|--almost-all -B|--ignore-backups -c -C -d|--directory -F \
            --classify? -f -g -G|--no-group -h|--human-readable --si \
            -H|--dereference-command-line -i|--inode -k|--kibibytes -l -L|--dereference -m \
            -n|--numeric-uid-gid -N|--literal -o -p -q|--hide-control-chars -Q|--quote-name \
            -r|--reverse -R|--recursive -s|--size -S -t -u -U -v -x -X -Z|--context -1 --color? \
            --full-time --group-directories-first --sort= --time= --time-style= \
            --indicator-style= --format= -w|--width= -I|--ignore= --hide= -T|--tabsize= \
            --block-size= --author"],
        ..Options::NONE
    },
    subcommands: &[],
};

const CAT: Policy = Policy {
    program: "cat",
    top: Options {
        allowed: &["-A|--show-all -b|--number-nonblank -e -E|--show-ends -n|--number \
            -s|--squeeze-blank -t -T|--show-tabs -u -v|--show-nonprinting"],
        ..Options::NONE
    },
    subcommands: &[],
};

const GREP: Policy = Policy {
    program: "grep",
    top: Options {
        allowed: &["-i|--ignore-case -y --no-ignore-case -v|--invert-match -w|--word-regexp \
            -x|--line-regexp -c|--count -l|--files-with-matches -L|--files-without-match \
            -o|--only-matching -q|--quiet|--silent -s|--no-messages -b|--byte-offset \
            -H|--with-filename -h|--no-filename -n|--line-number -T|--initial-tab -Z|--null \
            -z|--null-data -r|--recursive -R|--dereference-recursive -a|--text -I -U|--binary \
            -E|--extended-regexp -F|--fixed-strings -G|--basic-regexp -P|--perl-regexp \
            -e|--regexp= -f|--file= -m|--max-count= -A|--after-context= \
            -B|--before-context= -C|--context= --color? --colour? --include= --exclude= \
            --exclude-dir= --exclude-from= --binary-files= -d|--directories= -D|--devices= \
            --label= --line-buffered"],
        numeric: true,
        ..Options::NONE
    },
    subcommands: &[],
};

const RG: Policy = Policy {
    program: "rg",
    top: Options {
        allowed: &["-i|--ignore-case -s|--case-sensitive -S|--smart-case -v|--invert-match \
            -w|--word-regexp -x|--line-regexp -c|--count --count-matches -l|--files-with-matches \
            --files-without-match -o|--only-matching -q|--quiet -n|--line-number \
            -N|--no-line-number -H|--with-filename -I|--no-filename --heading --no-heading \
            --column -b|--byte-offset -F|--fixed-strings -u|--unrestricted --hidden --no-ignore \
            --no-ignore-vcs --no-ignore-parent --no-ignore-dot -L|--follow --files --json \
            --type-list -U|--multiline --multiline-dotall -P|--pcre2 -a|--text -0|--null \
            --null-data --trim --stats -p|--pretty --vimgrep --no-messages --one-file-system \
            --no-config --passthru --line-buffered --block-buffered --crlf --sort-files \
            -e|--regexp= -f|--file= -g|--glob= --iglob= -t|--type= -T|--type-not= \
            -m|--max-count= -M|--max-columns= -A|--after-context= -B|--before-context= \
            -C|--context= -d|--max-depth= -j|--threads= -r|--replace= -E|--encoding= \
            --color= --colors= --sort= --sortr= --engine= --max-filesize= --ignore-file= \
            --context-separator= --path-separator= --field-match-separator="],
        refused: &[
            ("--pre= --pre-glob= --hostname-bin=", "it runs a program"),
            ("-z|--search-zip", "it runs decompression programs"),
        ],
        ..Options::NONE
    },
    subcommands: &[],
};

/// What `program` runs with beyond the sandbox's own variables, the working folder being
/// `root` and the network allowed or not.
pub fn environment(program: &str, root: &Path, network: bool) -> Vec<(String, String)> {
    let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    };
    match program {
        "git" => {
            let mut env = pairs(&[
                ("GIT_CONFIG_NOSYSTEM", "1"),
                ("GIT_CONFIG_GLOBAL", "/dev/null"),
                ("GIT_TERMINAL_PROMPT", "0"),
                ("GIT_OPTIONAL_LOCKS", "0"),
                ("GIT_PAGER", "cat"),
                ("PAGER", "cat"),
                ("GIT_EDITOR", "false"),
                ("GIT_ASKPASS", "false"),
                ("GIT_SSH_COMMAND", "false"),
            ]);
            // Command-line level configuration, above the repository's own: the settings a
            // repository could use to run a program on a read are overridden, and the working
            // folder is trusted though the command user does not own it.
            let root = root.to_string_lossy().into_owned();
            let settings = [
                ("safe.directory", root.as_str()),
                ("core.fsmonitor", "false"),
                ("core.hooksPath", "/dev/null"),
                ("core.pager", "cat"),
                ("protocol.allow", "never"),
                ("credential.helper", ""),
            ];
            env.push(("GIT_CONFIG_COUNT".into(), settings.len().to_string()));
            for (at, (key, value)) in settings.iter().enumerate() {
                env.push((format!("GIT_CONFIG_KEY_{at}"), (*key).to_owned()));
                env.push((format!("GIT_CONFIG_VALUE_{at}"), (*value).to_owned()));
            }
            env
        }
        "cargo" if !network => {
            pairs(&[("CARGO_NET_OFFLINE", "true"), ("CARGO_TERM_COLOR", "never")])
        }
        "cargo" => pairs(&[("CARGO_TERM_COLOR", "never")]),
        "python3" => pairs(&[("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONNOUSERSITE", "1")]),
        _ => Vec::new(),
    }
}
