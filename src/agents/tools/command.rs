//! `run_command`: a program from an allow-list, run in the agent's root with the arguments the
//! model gave, and never through a shell (no expansion, no pipes, no `;`). Its environment is
//! emptied but for `PATH`, `HOME` (the root) and `LANG`, so no secret of the process (provider
//! keys, database URLs) reaches it; it is killed at its deadline, and its output is capped.
//!
//! Arguments are where a model can slip out (argument injection): each argument, and the value
//! after a `=` in it (`--file=/etc/passwd`), is refused if it is an absolute path, starts with
//! `~` or has a `..` part; one that names an existing file is resolved and must stay under the
//! root (a symbolic link pointing out is refused). The program is named by itself, never by a
//! path.

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
                .kill_on_drop(true);
            let output = match tokio::time::timeout(timeout, command.output()).await {
                Ok(Ok(output)) => output,
                Ok(Err(error)) => return Err(ToolError::Failed(format!("{program}: {error}"))),
                Err(_) => {
                    return Err(ToolError::Failed(format!("{program}: no answer within {} s: killed", timeout.as_secs())));
                }
            };
            let (stdout, stdout_cut) = capped(&String::from_utf8_lossy(&output.stdout));
            let (stderr, stderr_cut) = capped(&String::from_utf8_lossy(&output.stderr));
            Ok(json!({ "status": output.status.code(), "stdout": stdout, "stderr": stderr,
                "truncated": stdout_cut || stderr_cut, "duration_ms": started.elapsed().as_millis() as u64 }))
        }
        .boxed()
    }
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
}
