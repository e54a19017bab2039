//! `run_command`: a program from an allow-list, run in the agent's root with the arguments the
//! model gave, and never through a shell (no expansion, no pipes, no `;`). Its environment is
//! emptied but for `PATH`, `HOME` (the root) and `LANG`, so no secret of the process (provider
//! keys, database URLs) reaches it; it is killed at its deadline, and its output is capped.
//!
//! Arguments are where a model can slip out (argument injection): each argument, and the value
//! after a `=` in it (`--file=/etc/passwd`), is refused if it is an absolute path, starts with
//! `~` or has a `..` part; one that names an existing file is resolved and must stay under the
//! root (a symbolic link pointing out is refused). The program is named by itself, never by a
//! path. Some programs have rules of their own (`program_rules`): `git` runs only subcommands
//! that read, without an option that runs a program (`-c alias.x=!sh` is a shell otherwise).
//!
//! A command runs as a process group of its own: when it ends, or its deadline kills it,
//! whatever it started is killed with it, and its output is read to the end with only the
//! first 64 KiB kept. Still to come (design invariant 13): an unprivileged user and namespaces.

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::files::Root;
use super::{Tool, ToolError, capped};
use crate::llm::ToolSpec;

pub const ARGS_MAX: usize = 64;
pub const ARG_LEN_MAX: usize = 4_096;
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The search path a command runs with: the system's own folders, never the serve's `PATH`
/// (which a deployment may point anywhere, and which would be one more thing a tool inherits).
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

pub struct RunCommand {
    pub root: Root,
    /// Programs it may run, by name.
    pub allowed: Vec<String>,
    pub timeout: Duration,
}

impl RunCommand {
    /// Why `program` and `args` may not run, if they may not.
    pub fn check(&self, program: &str, args: &[String]) -> Result<(), ToolError> {
        let refuse = |why: String| Err(ToolError::Refused(why));
        if !self.allowed.iter().any(|allowed| allowed == program) {
            return refuse(format!(
                "{program:?} is not one of the commands allowed ({})",
                self.allowed.join(", ")
            ));
        }
        if args.len() > ARGS_MAX {
            return refuse(format!("at most {ARGS_MAX} arguments"));
        }
        program_rules(program, args).map_err(ToolError::Refused)?;
        for arg in args {
            if arg.len() > ARG_LEN_MAX || arg.contains('\0') {
                return refuse(format!("argument {arg:?}: too long, or not text"));
            }
            let value = arg.split_once('=').map_or(arg.as_str(), |(_, value)| value);
            for part in [arg.as_str(), value] {
                let looks_outside = part.starts_with('/')
                    || part.starts_with('~')
                    || std::path::Path::new(part)
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                if looks_outside {
                    return refuse(format!("argument {arg:?} reaches outside the working folder"));
                }
                let candidate = self.root.path().join(part);
                if !part.is_empty() && !part.starts_with('-') && candidate.exists() {
                    self.root.resolve(part)?;
                }
            }
        }
        Ok(())
    }
}

impl Tool for RunCommand {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "run_command".into(),
            description: format!(
                "Runs one of these programs in the working folder, without a shell: {}. Answers its exit status and output.",
                self.allowed.join(", ")
            ),
            parameters: json!({ "type": "object", "properties": {
                "program": { "type": "string" },
                "args": { "type": "array", "items": { "type": "string" } } },
                "required": ["program"] }),
        }
    }

    fn run(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let program = arguments["program"].as_str().unwrap_or_default().to_owned();
        let args: Vec<String> = arguments["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|arg| arg.as_str().map(str::to_owned))
            .collect();
        let checked = self.check(&program, &args);
        let (root, timeout) = (self.root.clone(), self.timeout);
        async move {
            checked?;
            let started = Instant::now();
            let mut command = tokio::process::Command::new(&program);
            command
                .args(&args)
                .current_dir(root.path())
                .env_clear()
                .env("PATH", SANDBOX_PATH)
                .env("HOME", root.path())
                .env("LANG", "C.UTF-8")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                // A group of its own, so that what it starts ends with it.
                .process_group(0)
                .kill_on_drop(true);
            let mut child = command.spawn().map_err(|error| ToolError::Failed(format!("{program}: {error}")))?;
            let group = child.id();
            let stdout = tokio::spawn(read_capped(child.stdout.take()));
            let stderr = tokio::spawn(read_capped(child.stderr.take()));
            let outcome = tokio::time::timeout(timeout, child.wait()).await;
            // Whatever it left running (a child it forked, a daemon) goes with it, and with
            // them the last holders of its output pipes.
            kill_group(group);
            let status = match outcome {
                Ok(Ok(status)) => status,
                Ok(Err(error)) => return Err(ToolError::Failed(format!("{program}: {error}"))),
                Err(_) => {
                    return Err(ToolError::Failed(format!("{program}: no answer within {} s: killed", timeout.as_secs())));
                }
            };
            let (stdout, stderr) = (stdout.await.unwrap_or_default(), stderr.await.unwrap_or_default());
            let (stdout, stdout_cut) = capped(&String::from_utf8_lossy(&stdout));
            let (stderr, stderr_cut) = capped(&String::from_utf8_lossy(&stderr));
            Ok(json!({ "status": status.code(), "stdout": stdout, "stderr": stderr,
                "truncated": stdout_cut || stderr_cut, "duration_ms": started.elapsed().as_millis() as u64 }))
        }
        .boxed()
    }
}

/// A command's output pipe read to its end, keeping the first [`super::RESULT_BYTES_MAX`]
/// bytes (and one more, so the cut shows) and draining the rest, so that a chatty program
/// neither blocks on a full pipe nor fills this process's memory.
async fn read_capped(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut pipe) = pipe else { return Vec::new() };
    let keep = super::RESULT_BYTES_MAX + 1;
    let (mut kept, mut chunk) = (Vec::new(), vec![0u8; 16 * 1024]);
    while let Ok(read @ 1..) = pipe.read(&mut chunk).await {
        let room = keep.saturating_sub(kept.len()).min(read);
        kept.extend_from_slice(&chunk[..room]);
    }
    kept
}

/// Kills the process group a command was started as (its id is the command's pid).
fn kill_group(group: Option<u32>) {
    let Some(group) = group.and_then(|id| libc::pid_t::try_from(id).ok()) else { return };
    // SAFETY: a plain signal to a process group we created; an empty group answers ESRCH.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// The rules of a program beyond the path rules every argument meets. For `git`: no option
/// before the subcommand (that is where `-c alias.x=!sh`, `--exec-path` and `--git-dir`
/// go), only subcommands that read, and none of the options that run a program, glued
/// (`-O<cmd>`) or abbreviated (`--open-files`, as git accepts any unique prefix).
fn program_rules(program: &str, args: &[String]) -> Result<(), String> {
    if program != "git" {
        return Ok(());
    }
    const READING: &[&str] = &[
        "status",
        "log",
        "diff",
        "show",
        "grep",
        "blame",
        "ls-files",
        "ls-tree",
        "rev-parse",
        "describe",
        "shortlog",
        "cat-file",
        "rev-list",
        "branch",
        "tag",
    ];
    const RUNS_A_PROGRAM: &[&str] = &[
        "--open-files-in-pager",
        "--ext-diff",
        "--textconv",
        "--upload-pack",
        "--receive-pack",
        "--exec",
        "--config-env",
        "--output",
    ];
    let Some(at) = args.iter().position(|arg| !arg.starts_with('-')) else {
        return Err(format!("git needs one of {}", READING.join(", ")));
    };
    if let Some(global) = args[..at].first() {
        return Err(format!("git option {global:?} before the subcommand is not allowed"));
    }
    let subcommand = args[at].as_str();
    if !READING.contains(&subcommand) {
        return Err(format!("git {subcommand:?} is not allowed; only {}", READING.join(", ")));
    }
    for arg in &args[at + 1..] {
        let option = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        let long = option.starts_with("--") && option.len() > 2;
        let runs = option.starts_with("-O")
            || long && RUNS_A_PROGRAM.iter().any(|flag| flag.starts_with(option));
        if runs {
            return Err(format!("git option {arg:?} is not allowed: it runs a program"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool() -> (std::path::PathBuf, RunCommand) {
        let dir = std::env::temp_dir().join(format!("brain-cmd-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "hello\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("host")).unwrap();
        let root = Root::new(&dir).unwrap();
        (
            dir,
            RunCommand {
                root,
                allowed: vec!["cat".into(), "env".into(), "sleep".into()],
                timeout: Duration::from_secs(1),
            },
        )
    }

    #[tokio::test]
    async fn only_listed_programs_run_and_their_arguments_stay_in_the_root() {
        let (dir, tool) = tool();
        let run =
            |program: &str, args: &[&str]| tool.run(json!({ "program": program, "args": args }));
        let read = run("cat", &["notes.txt"]).await.unwrap();
        assert_eq!((&read["status"], &read["stdout"]), (&json!(0), &json!("hello\n")));
        for (program, args) in [
            ("rm", vec!["notes.txt"]),
            ("/bin/cat", vec!["notes.txt"]),
            ("sh", vec!["-c", "cat /etc/passwd"]),
            ("cat", vec!["/etc/passwd"]),
            ("cat", vec!["../../etc/passwd"]),
            ("cat", vec!["--file=/etc/passwd"]),
            ("cat", vec!["host"]),
            ("cat", vec!["~/.ssh/id_rsa"]),
        ] {
            let outcome = run(program, &args).await;
            assert!(
                matches!(outcome, Err(ToolError::Refused(_))),
                "{program} {args:?}: {outcome:?}"
            );
        }
        // No secret of this process reaches the command.
        let env = run("env", &[]).await.unwrap();
        let mut names: Vec<&str> =
            env["stdout"].as_str().unwrap().lines().filter_map(|l| l.split('=').next()).collect();
        names.sort();
        assert_eq!(names, ["HOME", "LANG", "PATH"]);
        let slow = run("sleep", &["5"]).await;
        assert!(
            matches!(slow, Err(ToolError::Failed(ref why)) if why.contains("killed")),
            "{slow:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn git_runs_only_reading_subcommands_without_options_that_run_a_program() {
        let refused: &[&[&str]] = &[
            &["-c", "alias.x=!sh -c id", "x"],
            &["-calias.x=!sh", "x"],
            &["--exec-path=.", "status"],
            &["grep", "-Ocat", "needle"],
            &["grep", "-O", "cat", "needle"],
            &["grep", "--open-files", "needle"],
            &["log", "--ext-diff"],
            &["diff", "--textc"],
            &["config", "core.pager", "sh"],
            &["submodule", "foreach", "id"],
            &[],
        ];
        for args in refused {
            let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
            assert!(program_rules("git", &args).is_err(), "git {args:?} was allowed");
        }
        let allowed: &[&[&str]] =
            &[&["log", "-p", "-n", "3"], &["diff", "-c"], &["status"], &["grep", "-n", "needle"]];
        for args in allowed {
            let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
            assert_eq!(program_rules("git", &args), Ok(()), "git {args:?}");
        }
    }

    #[tokio::test]
    async fn what_a_command_leaves_running_is_killed_with_it() {
        // Given a program (a shell, for this test only) that leaves a child behind.
        let (dir, tool) = tool();
        let shell = RunCommand { allowed: vec!["sh".into()], ..tool };
        let args = ["-c", "sleep 30 & echo $!"];
        let deadline = Instant::now() + Duration::from_secs(10);
        let run = shell.run(json!({ "program": "sh", "args": args }));
        let ran = tokio::time::timeout(Duration::from_secs(10), run).await;
        let ran = ran.expect("the call ends with its command, not with what it left").unwrap();
        let pid: u32 = ran["stdout"].as_str().unwrap().trim().parse().unwrap();

        // Then the child is gone (or only waits to be reaped) soon after the command ended.
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|rest| rest.chars().next());
            if matches!(state, None | Some('Z') | Some('X')) {
                break;
            }
            assert!(Instant::now() < deadline, "the child {pid} still runs: {stat}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
