//! The sandbox `run_command` runs each program in, so that what the model makes a program do
//! stays inside it (design invariant 13):
//!
//! - **its own user** (`BRAIN_COMMAND_USER`, `brain-cmd` by default), never the serve's: it
//!   cannot read the serve's `/proc/<pid>/environ` (provider keys, database URLs) nor signal
//!   or trace it, and `no_new_privs` keeps a set-user-id program from raising it again. A
//!   missing user, or a serve that cannot switch users (not root, no `CAP_SETUID` and
//!   `CAP_SETGID`), refuses every command rather than run it as the serve: a refusal the model
//!   sees as the tool's error, and a warning at start.
//! - **namespaces**, where the kernel allows: a PID namespace (the command cannot see the
//!   serve, and when it ends or is killed, everything it started dies with it), a mount
//!   namespace (private `/tmp` and `/dev/shm`, `/run` and its daemon sockets hidden, a `/proc`
//!   of its own), IPC and UTS namespaces, and a network namespace with only a loopback unless
//!   `BRAIN_COMMAND_NETWORK` grants the network.
//! - **Landlock**, where the kernel has it: the system's folders readable, the working folder
//!   (and the private `/tmp`) the only writable places; TCP denied without the network
//!   (ABI 4), and no signal or abstract socket beyond the sandbox (ABI 6).
//! - **limits** per process: CPU seconds, data, file size, open files, no core dump; and
//!   processes per user, which bounds all commands together since the user is theirs alone.
//!
//! What is in force is probed once, by running `true` through the whole sandbox, and logged at
//! start. The code between `fork` and `exec` is in [`child`]: it may not allocate, so
//! everything it needs is prepared here as a [`child::Plan`].

mod child;
mod landlock;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use child::{Account, Plan};

use super::ToolError;
use crate::config::agents::CommandSettings;

/// The search path a command runs with: the system's own folders, never the serve's `PATH`
/// (which a deployment may point anywhere, and which would be one more thing a tool inherits).
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Folders a command may read and run programs from (those this system has).
pub const READABLE: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc",
    "/sys", "/dev",
];
/// Devices a command may write to.
pub const DEVICES: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];
/// Folders a command gets a private, writable copy of (empty at its start).
pub const PRIVATE: &[&str] = &["/tmp", "/dev/shm"];
/// Folders hidden from a command without the network: daemons' sockets live there.
pub const HIDDEN: &[&str] = &["/run"];
/// Size of each private folder, in MiB (memory: `tmpfs`).
pub const PRIVATE_SIZE_MB: u64 = 256;
pub const OPEN_FILES_MAX: u64 = 1_024;
/// How long the start-up probe waits for `true` to end.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sandbox of one set of [`CommandSettings`], as this machine allows it.
#[derive(Debug)]
pub struct Sandbox {
    settings: CommandSettings,
    /// The user commands run as, or why no command may run.
    account: Result<Account, String>,
    /// The Landlock ABI version in force; 0: none.
    landlock_abi: u32,
    /// Whether commands run in namespaces of their own; when not, why.
    namespaces: Result<(), String>,
}

impl Sandbox {
    /// The sandbox for `settings`, probed and logged the first time this process asks for it.
    pub fn shared(settings: &CommandSettings) -> Arc<Sandbox> {
        // A process has one set of settings (tests a few), so this map stays that small.
        static MADE: Mutex<Option<HashMap<CommandSettings, Arc<Sandbox>>>> = Mutex::new(None);
        let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let made = made.get_or_insert_with(HashMap::new);
        if let Some(sandbox) = made.get(settings) {
            return sandbox.clone();
        }
        let sandbox = Arc::new(Sandbox::new(settings.clone()));
        match &sandbox.account {
            Ok(_) => {
                tracing::info!(sandbox = %sandbox.describe(), "run_command runs programs in a sandbox")
            }
            Err(why) => tracing::warn!(%why, "run_command will refuse every command"),
        }
        made.insert(settings.clone(), sandbox.clone());
        sandbox
    }

    /// Probes what this machine allows: the user, Landlock, then the namespaces, by running
    /// `true` through the whole sandbox with them and, if that fails, without.
    pub fn new(settings: CommandSettings) -> Sandbox {
        let account = account(&settings.user);
        let mut sandbox =
            Sandbox { settings, account, landlock_abi: landlock::abi(), namespaces: Ok(()) };
        if sandbox.account.is_err() {
            sandbox.namespaces = Err("not probed: no command runs".into());
            return sandbox;
        }
        if let Err(why) = sandbox.probe() {
            sandbox.namespaces = Err(why);
            if let Err(why) = sandbox.probe() {
                sandbox.account = Err(format!("the command sandbox does not start here: {why}"));
            }
        }
        sandbox
    }

    /// The same sandbox without namespaces, as on a machine that has none.
    pub fn without_namespaces(&self) -> Sandbox {
        Sandbox {
            settings: self.settings.clone(),
            account: self.account.clone(),
            landlock_abi: self.landlock_abi,
            namespaces: Err("turned off".into()),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.settings.timeout_s)
    }

    pub fn network(&self) -> bool {
        self.settings.network
    }

    /// Whether commands run in namespaces of their own (a PID namespace among them).
    pub fn isolates_processes(&self) -> bool {
        self.namespaces.is_ok()
    }

    /// The user commands run as, by id.
    pub fn uid(&self) -> Option<u32> {
        self.account.as_ref().ok().map(|account| account.uid)
    }

    /// What is in force, for the log and the README's operators.
    pub fn describe(&self) -> String {
        let settings = &self.settings;
        let user = match &self.account {
            Ok(account) => format!("user {} (uid {})", settings.user, account.uid),
            Err(why) => format!("no command runs: {why}"),
        };
        let namespaces = match &self.namespaces {
            Ok(()) if settings.network => {
                "namespaces: pid, mount, ipc, uts (network granted)".to_owned()
            }
            Ok(()) => "namespaces: pid, mount, ipc, uts, network".to_owned(),
            Err(why) => format!("no namespaces ({why})"),
        };
        let landlock = match self.landlock_abi {
            0 => "no Landlock".to_owned(),
            abi => format!("Landlock ABI {abi}"),
        };
        format!(
            "{user}; {namespaces}; {landlock}; limits: {} s, {} CPU s, {} MiB data, {} MiB files, {} processes, {OPEN_FILES_MAX} open files",
            settings.timeout_s,
            settings.cpu_s,
            settings.memory_mb,
            settings.file_mb,
            settings.processes
        )
    }

    /// `program` with `args` made ready to run in the sandbox, in `root`, with `env` beside
    /// the sandbox's own variables; refused when no command may run here.
    pub fn command(
        &self,
        program: &str,
        args: &[String],
        root: &Path,
        env: Vec<(String, String)>,
    ) -> Result<tokio::process::Command, ToolError> {
        let account = self.account.clone().map_err(ToolError::Refused)?;
        let plan = self.plan(root, Some(account)).map_err(ToolError::Failed)?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(root)
            .env_clear()
            .env("PATH", SANDBOX_PATH)
            .env("HOME", root)
            .env("LANG", "C.UTF-8")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own, so that a deadline kills all of it at once.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: `child::enter` makes system calls only, on the plan it owns.
        unsafe {
            command.pre_exec(move || child::enter(&plan));
        }
        Ok(command)
    }

    /// Runs `true` through the sandbox as it stands.
    fn probe(&self) -> Result<(), String> {
        let account = self.account.clone().ok();
        let plan = self.plan(Path::new("/"), account)?;
        let mut command = std::process::Command::new("true");
        command.current_dir("/").env_clear().env("PATH", SANDBOX_PATH).stdin(Stdio::null());
        command.stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        // SAFETY: as in `command`.
        unsafe {
            command.pre_exec(move || child::enter(&plan));
        }
        let mut child =
            command.spawn().map_err(|error| format!("the probe did not start: {error}"))?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the probe ended with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("the probe did not end".into());
                }
            }
        }
    }

    /// What the child needs for a command in `root`, prepared here since it may not allocate.
    fn plan(&self, root: &Path, account: Option<Account>) -> Result<Plan, String> {
        let settings = &self.settings;
        let namespaces = self.namespaces.is_ok();
        let path = |path: &Path| {
            CString::new(path.as_os_str().as_bytes())
                .map_err(|_| format!("{}: not a path", path.display()))
        };
        let existing = |paths: &[&str]| -> Vec<CString> {
            paths
                .iter()
                .filter(|p| Path::new(p).exists())
                .filter_map(|p| CString::new(*p).ok())
                .collect()
        };
        let mib = 1024 * 1024;
        let cpu = settings.cpu_s;
        let wanted = [
            // One second past the soft limit's SIGXCPU, the hard limit's SIGKILL.
            (libc::RLIMIT_CPU, cpu, cpu + 1),
            (libc::RLIMIT_DATA, settings.memory_mb * mib, settings.memory_mb * mib),
            (libc::RLIMIT_FSIZE, settings.file_mb * mib, settings.file_mb * mib),
            (libc::RLIMIT_NOFILE, OPEN_FILES_MAX, OPEN_FILES_MAX),
            (libc::RLIMIT_NPROC, settings.processes, settings.processes),
        ];
        let limits = wanted
            .into_iter()
            .map(|(resource, soft, hard)| {
                // No higher than the limit in force: raising it takes a privilege.
                let now = current_hard_limit(resource);
                (resource, soft.min(now), hard.min(now))
            })
            .collect();
        let private = if namespaces { existing(PRIVATE) } else { Vec::new() };
        let hidden = if namespaces && !settings.network { existing(HIDDEN) } else { Vec::new() };
        let mut rebind = Vec::new();
        if let Some(under) =
            PRIVATE.iter().map(Path::new).find(|p| namespaces && root.starts_with(p) && p.exists())
        {
            let mut folders: Vec<&Path> =
                root.ancestors().take_while(|a| a.starts_with(under) && *a != under).collect();
            if folders.is_empty() {
                folders.push(root);
            }
            folders.reverse();
            rebind = folders.into_iter().map(path).collect::<Result<_, _>>()?;
        }
        Ok(Plan {
            account,
            namespaces,
            network: settings.network,
            landlock: (self.landlock_abi > 0)
                .then(|| landlock::Handled::at(self.landlock_abi, !settings.network)),
            limits,
            serve_pid: std::process::id() as libc::pid_t,
            root: path(root)?,
            private,
            hidden,
            tmpfs_options: CString::new(format!("size={PRIVATE_SIZE_MB}m,mode=1777"))
                .map_err(|e| e.to_string())?,
            hidden_options: c"size=64k,mode=755".to_owned(),
            rebind,
            readable: existing(READABLE),
            devices: existing(DEVICES),
        })
    }
}

/// The hard limit in force for `resource`.
fn current_hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a plain system call writing the struct given.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_max
}

/// The account named `user`, if commands may run as it: it exists, it is neither root nor
/// the serve's own user, and the serve can switch to it.
fn account(user: &str) -> Result<Account, String> {
    let account = lookup(user)?;
    if account.uid == 0 || account.gid == 0 {
        return Err(format!("the command user {user:?} is root; create an unprivileged one"));
    }
    // SAFETY: plain queries of this process's ids.
    let (serve_uid, serve_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if account.uid == serve_uid || account.gid == serve_gid {
        return Err(format!(
            "the command user {user:?} is the serve's own user or group: commands could read the serve's secrets"
        ));
    }
    if !can_switch_user() {
        return Err(format!(
            "the serve cannot switch to the command user {user:?} (it needs root, or CAP_SETUID and CAP_SETGID): commands are refused rather than run as the serve"
        ));
    }
    Ok(account)
}

/// The user named `user` in the system's user database.
fn lookup(user: &str) -> Result<Account, String> {
    let name = CString::new(user).map_err(|_| format!("{user:?}: not a user name"))?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids) for getpwnam_r to fill.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, the buffer's length is its own.
    let status = unsafe {
        libc::getpwnam_r(name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found)
    };
    if status != 0 || found.is_null() {
        return Err(format!(
            "the command user {user:?} does not exist: create it (scripts/services.sh does: useradd --system --no-create-home --shell /usr/sbin/nologin {user})"
        ));
    }
    Ok(Account { uid: entry.pw_uid, gid: entry.pw_gid })
}

/// Whether this process holds `CAP_SETUID` and `CAP_SETGID` (root does, unless a container
/// took them).
fn can_switch_user() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SETGID: u64 = 1 << 6;
    const CAP_SETUID: u64 = 1 << 7;
    effective & (CAP_SETGID | CAP_SETUID) == CAP_SETGID | CAP_SETUID
}

#[cfg(test)]
mod tests;
