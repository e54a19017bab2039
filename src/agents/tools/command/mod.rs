//! `run_command`: a program from an allow-list, run in the agent's root with the arguments the
//! model gave, never through a shell (no expansion, no pipes, no `;`), inside the sandbox of
//! [`super::sandbox`]: as a user of its own, in namespaces of its own, under Landlock and
//! limits. Its environment is emptied but for `PATH`, `HOME` (the root), `LANG` and what its
//! program's policy sets (`git` runs without any configuration file but the repository's).
//!
//! Arguments are where a model can slip out (argument injection), so they are checked twice
//! over before anything runs. Each program's policy ([`super::policy`]) parses them as the
//! program would and refuses any option it does not declare (`git -c alias.x=!sh`,
//! `git grep -O<cmd>` in any spelling); a program without a policy takes plain arguments
//! only. Then each positional argument and option value, and the part after a `=` in it
//! (`--file=/etc/passwd`), is refused if it is an absolute path, starts with `~` or has a `..`
//! part; one that names an existing file is resolved and must stay under the root (a
//! symbolic link pointing out is refused). The program is named by itself, never by a path.
//!
//! A command runs as a process group of its own and, with namespaces, as the only tree of a
//! PID namespace: when it ends, or its deadline kills it, whatever it started dies with it,
//! a grandchild that left the group included. Its output is read to the end with only the
//! first 64 KiB kept; a program killed by a signal answers 128 plus the signal's number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::files::Root;
use super::sandbox::Sandbox;
use super::{Tool, ToolError, capped, policy};
use crate::llm::ToolSpec;

pub const ARGS_MAX: usize = 64;
pub const ARG_LEN_MAX: usize = 4_096;
/// How long the output is still read once a command has ended: only a process that left
/// its PID namespace's reach (there is none without namespaces) can hold its pipes longer.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(500);

pub struct RunCommand {
    pub root: Root,
    /// Programs it may run, by name.
    pub allowed: Vec<String>,
    pub sandbox: Arc<Sandbox>,
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
        if let Some(arg) = args.iter().find(|arg| arg.len() > ARG_LEN_MAX || arg.contains('\0')) {
            return refuse(format!("argument {arg:?}: too long, or not text"));
        }
        let words = policy::check(program, args).map_err(ToolError::Refused)?;
        for word in words {
            let value = word.split_once('=').map_or(word, |(_, value)| value);
            for part in [word, value] {
                let looks_outside = part.starts_with('/')
                    || part.starts_with('~')
                    || std::path::Path::new(part)
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                if looks_outside {
                    return refuse(format!("argument {word:?} reaches outside the working folder"));
                }
                let candidate = self.root.path().join(part);
                if !part.is_empty() && candidate.exists() {
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
                "Runs one of these programs in the working folder, without a shell, in a sandbox (no network unless granted, only the working folder writable): {}. Options are checked against each program's list. Answers its exit status and output.",
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
        let command = self.check(&program, &args).and_then(|()| {
            let root = self.root.path();
            let env = policy::environment(&program, root, self.sandbox.network());
            self.sandbox.command(&program, &args, root, env)
        });
        let timeout = self.sandbox.timeout();
        async move {
            let mut command = command?;
            let started = Instant::now();
            // Spawned on this runtime thread, never a blocking-pool one: the sandbox's first
            // process dies with the thread that spawned it, and a pool thread ends when idle.
            let mut child = command.spawn().map_err(|error| ToolError::Failed(format!("{program}: {error}")))?;
            // Whatever it left running goes with it at the end, or when this call is dropped.
            let group = GroupKill(child.id());
            let (stdout, stderr) = (Captured::default(), Captured::default());
            let mut readers = [
                tokio::spawn(read_capped(child.stdout.take(), stdout.clone())),
                tokio::spawn(read_capped(child.stderr.take(), stderr.clone())),
            ];
            let outcome = tokio::time::timeout(timeout, child.wait()).await;
            // The last holders of its output pipes go with the group, so the reads end; one
            // that got away (only possible without a PID namespace) is not waited for.
            kill_group(group.0);
            let drained = futures::future::join_all(readers.iter_mut());
            if tokio::time::timeout(OUTPUT_GRACE, drained).await.is_err() {
                readers.iter().for_each(|reader| reader.abort());
            }
            let status = match outcome {
                Ok(Ok(status)) => status,
                Ok(Err(error)) => return Err(ToolError::Failed(format!("{program}: {error}"))),
                Err(_) => {
                    return Err(ToolError::Failed(format!("{program}: no answer within {} s: killed", timeout.as_secs())));
                }
            };
            let (stdout, stdout_cut) = capped(&String::from_utf8_lossy(&stdout.take()));
            let (stderr, stderr_cut) = capped(&String::from_utf8_lossy(&stderr.take()));
            let code = status.code().or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                status.signal().map(|signal| 128 + signal)
            });
            Ok(json!({ "status": code, "stdout": stdout, "stderr": stderr,
                "truncated": stdout_cut || stderr_cut, "duration_ms": started.elapsed().as_millis() as u64 }))
        }
        .boxed()
    }
}

/// What a command wrote on one pipe, kept where its reader can be abandoned.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// A command's output pipe read to its end, keeping the first [`super::RESULT_BYTES_MAX`]
/// bytes (and one more, so the cut shows) and draining the rest, so that a chatty program
/// neither blocks on a full pipe nor fills this process's memory.
async fn read_capped(pipe: Option<impl tokio::io::AsyncRead + Unpin>, kept: Captured) {
    use tokio::io::AsyncReadExt;
    let Some(mut pipe) = pipe else { return };
    let keep = super::RESULT_BYTES_MAX + 1;
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(read @ 1..) = pipe.read(&mut chunk).await {
        let mut kept = kept.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = keep.saturating_sub(kept.len()).min(read);
        kept.extend_from_slice(&chunk[..room]);
    }
}

/// Kills a command's process group when dropped: a call abandoned halfway (its mission
/// cancelled) leaves nothing running either.
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Kills the process group a command was started as (its id is the command's pid).
fn kill_group(group: Option<u32>) {
    let Some(group) = group.and_then(|id| libc::pid_t::try_from(id).ok()) else { return };
    // SAFETY: a plain signal to a process group we created; an empty group answers ESRCH.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests;
