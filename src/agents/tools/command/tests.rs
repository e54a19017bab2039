//! `run_command` against the real sandbox: the command user (`scripts/services.sh` creates
//! it), namespaces and Landlock as this machine has them. The escapes are the ones a model
//! steering the tool tried: each is refused before anything runs, or inert.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::agents::CommandSettings;

/// A working folder (`root`, writable by the command user) and a folder beside it, removed
/// at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("brain-cmd-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.join("root/notes.txt"), "hello\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("root/host")).unwrap();
        Scratch(dir)
    }

    fn root(&self) -> PathBuf {
        self.0.join("root")
    }

    fn script(&self, name: &str, text: &str) {
        std::fs::write(self.root().join(name), text).unwrap();
    }

    fn tool(&self, allowed: &[&str], settings: CommandSettings) -> RunCommand {
        RunCommand {
            root: Root::new(self.root()).unwrap(),
            allowed: allowed.iter().map(|p| (*p).to_owned()).collect(),
            sandbox: Arc::new(Sandbox::new(settings)),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(timeout_s: u64) -> CommandSettings {
    CommandSettings { timeout_s, ..CommandSettings::default() }
}

async fn run(tool: &RunCommand, program: &str, args: &[&str]) -> Result<Value, ToolError> {
    tool.run(json!({ "program": program, "args": args })).await
}

async fn ran(tool: &RunCommand, program: &str, args: &[&str]) -> Value {
    run(tool, program, args).await.unwrap_or_else(|error| panic!("{program} {args:?}: {error}"))
}

/// The processes running (not zombies) whose command line holds `marker`.
fn marked(marker: &str) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path();
            let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            let zombie = stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z'));
            (!zombie && String::from_utf8_lossy(&cmdline).contains(marker)).then_some(pid)
        })
        .collect()
}

fn running(marker: &str) -> bool {
    !marked(marker).is_empty()
}

/// Shell lines starting `sleep <seconds>` in a session of its own, and waiting until it is
/// (its command line says `sleep` once `setsid` has left the group and run it).
fn daemon(seconds: &str) -> String {
    format!(
        "setsid sleep {seconds} &\nuntil grep -q {seconds} /proc/$!/cmdline 2>/dev/null; do :; done\n"
    )
}

async fn gone_soon(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(marker) {
        assert!(Instant::now() < deadline, "a process with {marker:?} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn only_listed_programs_run_and_their_arguments_stay_in_the_root() {
    let scratch = Scratch::new();
    let tool = scratch.tool(&["cat", "env", "sleep", "brain-no-such-program"], settings(1));
    let read = ran(&tool, "cat", &["notes.txt"]).await;
    assert_eq!((&read["status"], &read["stdout"]), (&json!(0), &json!("hello\n")));
    let missing = run(&tool, "brain-no-such-program", &[]).await;
    assert!(
        matches!(missing, Err(ToolError::Failed(ref why)) if why.contains("No such file")),
        "{missing:?}"
    );
    for (program, args) in [
        ("rm", vec!["notes.txt"]),
        ("/bin/cat", vec!["notes.txt"]),
        ("sh", vec!["-c", "cat /etc/passwd"]),
        ("cat", vec!["/etc/passwd"]),
        ("cat", vec!["../../etc/passwd"]),
        ("cat", vec!["--file=/etc/passwd"]),
        ("cat", vec!["host"]),
        ("cat", vec!["~/.ssh/id_rsa"]),
        ("cat", vec!["-n", "--", "/etc/passwd"]),
        ("env", vec!["-i", "sh"]),
    ] {
        let outcome = run(&tool, program, &args).await;
        assert!(matches!(outcome, Err(ToolError::Refused(_))), "{program} {args:?}: {outcome:?}");
    }
    // No secret of this process reaches the command.
    let env = ran(&tool, "env", &[]).await;
    let mut names: Vec<&str> =
        env["stdout"].as_str().unwrap().lines().filter_map(|l| l.split('=').next()).collect();
    names.sort();
    assert_eq!(names, ["HOME", "LANG", "PATH"]);
    let slow = run(&tool, "sleep", &["5"]).await;
    assert!(matches!(slow, Err(ToolError::Failed(ref why)) if why.contains("killed")), "{slow:?}");
}

#[tokio::test]
async fn the_git_escapes_are_refused_and_a_repository_cannot_make_a_read_run_a_program() {
    let scratch = Scratch::new();
    let tool = scratch.tool(&["git"], settings(20));
    let marker = scratch.root().join("pwned");
    for args in [
        &["-c", "alias.x=!touch pwned", "x"][..],
        &["-calias.x=!touch pwned", "x"],
        &["--config-env=alias.x=HOME", "x"],
        &["--exec-path=.", "status"],
        &["grep", "-Otouch pwned", "hello"],
        &["grep", "-O", "touch", "hello"],
        &["grep", "-iOtouch", "hello"],
        &["grep", "--open-files-in-pager=touch", "hello"],
        &["grep", "--open", "hello"],
        &["log", "--ext-diff"],
        &["diff", "--textconv"],
        &["log", "--output=pwned"],
    ] {
        let outcome = run(&tool, "git", args).await;
        assert!(matches!(outcome, Err(ToolError::Refused(_))), "git {args:?}: {outcome:?}");
    }
    assert!(!marker.exists());

    // A repository whose configuration names programs to run on a read (as the serve's user
    // made it: the command user only reads it).
    let root = scratch.root();
    let git = |args: &[&str]| {
        let made =
            std::process::Command::new("git").args(args).current_dir(&root).output().unwrap();
        assert!(made.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&made.stderr));
    };
    git(&["init", "-q"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "add", "notes.txt"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "notes"]);
    scratch.script("evil.sh", "#!/bin/sh\ntouch pwned\n");
    std::fs::set_permissions(root.join("evil.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&["config", "core.fsmonitor", "./evil.sh"]);
    git(&["config", "core.pager", "./evil.sh"]);
    std::fs::write(root.join("notes.txt"), "hello again\n").unwrap();

    let status = ran(&tool, "git", &["status", "--short"]).await;
    assert_eq!(status["status"], 0, "{status}");
    assert!(status["stdout"].as_str().unwrap().contains("notes.txt"), "{status}");
    let log = ran(&tool, "git", &["log", "--oneline", "-p"]).await;
    assert!(log["stdout"].as_str().unwrap().contains("notes"), "{log}");
    assert!(!marker.exists(), "a program of the repository's configuration ran");
}

#[tokio::test]
async fn a_command_runs_as_its_own_user_and_cannot_read_the_serves_environment() {
    let scratch = Scratch::new();
    let tool = scratch.tool(&["id", "sh"], settings(10));
    let uid = tool.sandbox.uid().expect("the command user exists: run scripts/services.sh");
    let id = ran(&tool, "id", &[]).await;
    assert!(id["stdout"].as_str().unwrap().starts_with(&format!("uid={uid}(")), "{id}");

    let serve = std::process::id();
    scratch.script("steal.sh", &format!("cat /proc/{serve}/environ; echo \"status $?\"\n"));
    let secrets: Vec<String> = std::env::vars()
        .filter(|(name, _)| !["PATH", "HOME", "LANG"].contains(&name.as_str()))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert!(!secrets.is_empty(), "this process has variables to steal");
    let without = RunCommand {
        sandbox: Arc::new(tool.sandbox.without_namespaces()),
        ..scratch.tool(&["sh"], settings(10))
    };
    for (tool, namespaces) in [(&tool, true), (&without, false)] {
        let stolen = ran(tool, "sh", &["steal.sh"]).await;
        let out = stolen["stdout"].as_str().unwrap();
        assert!(!out.contains("status 0") || namespaces, "{stolen}");
        for secret in &secrets {
            assert!(!out.contains(secret.as_str()), "namespaces {namespaces}: {secret} was read");
        }
    }
}

#[tokio::test]
async fn a_command_writes_only_in_the_working_folder_and_a_private_tmp() {
    let scratch = Scratch::new();
    let outside =
        Path::new("/var/tmp").join(format!("brain-outside-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o777)).unwrap();
    let tmp_marker = format!("/tmp/brain-private-{}", uuid::Uuid::new_v4().simple());
    scratch.script(
        "write.sh",
        &format!(
            "echo in > inside.txt && echo inside-ok\n\
             echo out > {outside}/leak.txt || echo outside-refused\n\
             echo tmp > {tmp_marker} && echo tmp-ok\n",
            outside = outside.display()
        ),
    );
    let tool = scratch.tool(&["sh"], settings(10));
    let wrote = ran(&tool, "sh", &["write.sh"]).await;
    let out = wrote["stdout"].as_str().unwrap();
    assert_eq!(out, "inside-ok\noutside-refused\ntmp-ok\n", "{wrote}");
    assert_eq!(std::fs::read_to_string(scratch.root().join("inside.txt")).unwrap(), "in\n");
    assert!(!outside.join("leak.txt").exists());
    assert!(!Path::new(&tmp_marker).exists(), "the command's /tmp is its own");

    // Without namespaces, Landlock alone keeps it out.
    let without = RunCommand {
        sandbox: Arc::new(tool.sandbox.without_namespaces()),
        ..scratch.tool(&["sh"], settings(10))
    };
    let wrote = ran(&without, "sh", &["write.sh"]).await;
    assert!(wrote["stdout"].as_str().unwrap().contains("outside-refused"), "{wrote}");
    assert!(!outside.join("leak.txt").exists());
    let _ = std::fs::remove_dir_all(outside);
}

#[tokio::test]
async fn the_network_is_reachable_only_when_granted() {
    let scratch = Scratch::new();
    // PostgreSQL answers on this port for the tests.
    scratch.script(
        "connect.py",
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 5432), timeout=3).close()\n    print('connected')\nexcept OSError as error:\n    print('no network:', error)\n",
    );
    let closed = scratch.tool(&["python3"], settings(10));
    let open = scratch.tool(&["python3"], CommandSettings { network: true, ..settings(10) });
    let denied = ran(&closed, "python3", &["connect.py"]).await;
    assert!(denied["stdout"].as_str().unwrap().starts_with("no network"), "{denied}");
    let granted = ran(&open, "python3", &["connect.py"]).await;
    assert_eq!(granted["stdout"], "connected\n", "{granted}");
}

#[tokio::test]
async fn nothing_a_command_started_outlives_it_not_even_a_grandchild_in_a_session_of_its_own() {
    let scratch = Scratch::new();
    let tool = scratch.tool(&["sh"], settings(1));
    let n = uuid::Uuid::new_v4().as_u128() % 1_000_000;
    let (left, killed) = (format!("1001.{n:06}"), format!("1002.{n:06}"));
    // One ends at once, leaving a daemon behind; one is killed at its deadline.
    scratch.script("leave.sh", &format!("{}echo started\n", daemon(&left)));
    scratch.script("hang.sh", &format!("{}sleep 30\n", daemon(&killed)));

    let ended = ran(&tool, "sh", &["leave.sh"]).await;
    assert_eq!(ended["stdout"], "started\n", "{ended}");
    gone_soon(&format!("sleep\0{left}")).await;

    let hung = run(&tool, "sh", &["hang.sh"]).await;
    assert!(matches!(hung, Err(ToolError::Failed(ref why)) if why.contains("killed")), "{hung:?}");
    gone_soon(&format!("sleep\0{killed}")).await;
}

#[tokio::test]
async fn limits_are_in_force_exit_codes_come_through_and_a_busy_loop_is_stopped_by_its_cpu_limit() {
    let scratch = Scratch::new();
    scratch.script("limits.sh", "cat /proc/self/limits\n");
    scratch.script("spin.sh", "while :; do :; done\n");
    scratch.script("exit.sh", "echo bye >&2\nexit 7\n");
    let tool = scratch.tool(&["sh"], CommandSettings { cpu_s: 1, ..settings(20) });
    let limits = ran(&tool, "sh", &["limits.sh"]).await;
    let limits = limits["stdout"].as_str().unwrap();
    let limit = |name: &str| -> Vec<String> {
        let line = limits.lines().find(|line| line.starts_with(name)).unwrap_or_default();
        line[name.len()..].split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(limit("Max cpu time")[..2], ["1", "2"], "{limits}");
    assert_eq!(limit("Max processes")[0], "512", "{limits}");
    assert_eq!(limit("Max open files")[0], "1024", "{limits}");
    assert_eq!(limit("Max core file size")[0], "0", "{limits}");
    assert_eq!(limit("Max data size")[0], (4_096u64 << 20).to_string(), "{limits}");

    let exited = ran(&tool, "sh", &["exit.sh"]).await;
    assert_eq!((&exited["status"], &exited["stderr"]), (&json!(7), &json!("bye\n")));
    let started = Instant::now();
    let spun = ran(&tool, "sh", &["spin.sh"]).await;
    assert_eq!(spun["status"], 128 + libc::SIGXCPU, "{spun}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn without_its_user_no_command_runs() {
    let scratch = Scratch::new();
    let settings = CommandSettings { user: "brain-no-such-user".into(), ..settings(5) };
    let tool = scratch.tool(&["cat"], settings);
    let refused = run(&tool, "cat", &["notes.txt"]).await;
    assert!(
        matches!(refused, Err(ToolError::Refused(ref why)) if why.contains("does not exist")),
        "{refused:?}"
    );
    let root = CommandSettings { user: "root".into(), ..CommandSettings::default() };
    let refused = run(&scratch.tool(&["cat"], root), "cat", &["notes.txt"]).await;
    assert!(
        matches!(refused, Err(ToolError::Refused(ref why)) if why.contains("is root")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn without_namespaces_a_daemon_holding_the_output_does_not_hold_the_call() {
    // Where the kernel gives no PID namespace, a process that left the group survives (the
    // README says so); the call still answers at once with what the command wrote.
    let scratch = Scratch::new();
    let n = uuid::Uuid::new_v4().as_u128() % 1_000_000;
    let marker = format!("1003.{n:06}");
    scratch.script("leave.sh", &format!("{}echo started\n", daemon(&marker)));
    let tool = scratch.tool(&["sh"], settings(20));
    let tool = RunCommand { sandbox: Arc::new(tool.sandbox.without_namespaces()), ..tool };
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), run(&tool, "sh", &["leave.sh"])).await;
    let ended = ended.expect("the call ends with its command").unwrap();
    assert_eq!(ended["stdout"], "started\n", "{ended}");
    assert!(started.elapsed() < OUTPUT_GRACE * 4, "{:?}", started.elapsed());
    // This test's own leftover, found by its marker.
    for pid in marked(&format!("sleep\0{marker}")) {
        // SAFETY: a signal to the process this test left.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
