//! chromedriver's process, and the cleanup that leaves nothing of a browser behind: no
//! chromedriver, no Chromium, no profile folder.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::{Endpoint, POLL_INTERVAL};

pub(super) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

pub(super) fn spawn_driver(
    chromedriver: &Path,
    port: u16,
    dir: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(chromedriver);
    command
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", dir.join("chromedriver.log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Chromium leaves folders in the temporary directory (shared memory files, given
        // --disable-dev-shm-usage, and scoped dirs): in ours, they go with it.
        .env("TMPDIR", dir.join("tmp"))
        // In the caller's process group, as Chromium will be: a Ctrl-C in the terminal
        // reaches them with the tests, and both quit on it.
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: between fork and exec the closure calls only prctl, getppid and _exit,
        // which are async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // Killed when the process that started it dies without running Drop and
                // without its group being signalled (a SIGKILL to it alone, an abort).
                // Chromium outlives that still: it does not watch chromedriver. The signal
                // comes when the starting *thread* ends: start browsers from async code,
                // not from a short-lived blocking thread.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    command.spawn().with_context(|| {
        format!(
            "start {} (Debian: apt-get install chromium chromium-driver)",
            chromedriver.display()
        )
    })
}

/// Polls chromedriver's `/status` until it says it is ready.
pub(super) async fn wait_ready(
    http: &reqwest::Client,
    driver: &mut tokio::process::Child,
    port: u16,
    deadline: Instant,
) -> anyhow::Result<()> {
    let status = Endpoint { http: http.clone(), base: format!("http://127.0.0.1:{port}") };
    loop {
        if let Some(exit) = driver.try_wait()? {
            bail!("chromedriver exited at start ({exit})");
        }
        let probe = tokio::time::timeout(Duration::from_secs(2), status.get("/status")).await;
        let last = match probe {
            Ok(Ok(value)) if value["ready"] == json!(true) => return Ok(()),
            Ok(Ok(value)) => format!("not ready: {value}"),
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => "no answer within 2s".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!("chromedriver not ready in time; last: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Kills chromedriver, everything it started and every process naming `dir` on its
/// command line, and waits (at most 5 s) until they are gone, so that none writes into
/// `dir` after it is removed: Chromium's processes flush its cache index as they end,
/// recreating the folder. Killing chromedriver alone would not do: it talks to Chromium
/// over a debugging port, not a pipe Chromium would see close, and Chromium's processes
/// carry on. The ones naming `dir` (Chromium by its `--user-data-dir`, crashpad by its
/// database) are found even when chromedriver is gone; `dir` is unique to this browser,
/// so no other process can be hit.
pub(super) fn kill_all(driver: Option<u32>, dir: &Path) {
    let procs = processes();
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut doomed: Vec<u32> = driver.into_iter().collect();
    doomed.extend(
        procs
            .iter()
            .filter(|p| p.cmdline.windows(needle.len()).any(|w| w == needle))
            .map(|p| p.pid),
    );
    // And their descendants: renderers, zygotes, the GPU and network processes.
    let mut i = 0;
    while i < doomed.len() {
        let parent = doomed[i];
        for p in &procs {
            if p.ppid == parent && !doomed.contains(&p.pid) {
                doomed.push(p.pid);
            }
        }
        i += 1;
    }
    for &pid in &doomed {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill only sends a signal, to a process just seen among ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while doomed.iter().any(|&pid| running(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Process {
    pid: u32,
    ppid: u32,
    cmdline: Vec<u8>,
}

/// The processes in `/proc` (none elsewhere than Linux).
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut procs = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid …", where comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else { continue };
        let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        procs.push(Process { pid, ppid, cmdline });
    }
    procs
}

/// Whether `pid` still runs; a zombie has ended, it is only waiting to be reaped.
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

pub(super) fn driver_log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Removes the browser's folder, trying again for a moment when a file appears while it
/// is being emptied.
pub(super) fn remove_dir(dir: &Path) {
    for _ in 0..20 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}
