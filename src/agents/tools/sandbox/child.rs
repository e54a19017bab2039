//! What runs in a command's process between `fork` and `exec` (`pre_exec`): the namespaces,
//! mounts, Landlock ruleset, limits and user switch of a [`Plan`] prepared beforehand.
//!
//! Only system calls on memory the plan already holds: the process was forked from a serve
//! with many threads, so a lock another thread held (the allocator's among them) stays held
//! here for good. No allocation, no formatting, no `std` call that could do either; a failure
//! is an `errno` handed back through `std`'s own pipe.
//!
//! With namespaces, three processes carry one command. The first (the serve's child, in the
//! command's process group) enters new namespaces and forks the new PID namespace's init,
//! then only waits and hands its exit status on. The init forks the command and reaps
//! whatever ends up in the namespace until the command ends; when the init ends, the kernel
//! kills everything left in the namespace, so nothing a command starts (a daemon, a
//! grandchild that called `setsid`) outlives it. The third becomes the command: private
//! mounts, Landlock, limits, the command user, then `exec`.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use super::landlock::{self, Handled};

/// A user to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Account {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Everything the child needs, prepared before the fork.
#[derive(Debug)]
pub struct Plan {
    /// `None` for the start-up probe only; a command always has its user.
    pub account: Option<Account>,
    pub namespaces: bool,
    pub network: bool,
    pub landlock: Option<Handled>,
    /// `(resource, soft, hard)`, already no higher than the hard limits in force.
    pub limits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    /// The serve's process id: a child whose parent is already gone stops.
    pub serve_pid: libc::pid_t,
    /// The working folder, absolute.
    pub root: CString,
    /// Folders that get a private, writable `tmpfs` (`/tmp`, `/dev/shm`).
    pub private: Vec<CString>,
    /// Folders hidden under an empty `tmpfs` (`/run`, where daemons keep their sockets).
    pub hidden: Vec<CString>,
    pub tmpfs_options: CString,
    pub hidden_options: CString,
    /// When the working folder lies under a private folder: the folders to make inside the
    /// new `tmpfs` down to it (the last is the root), so it can be bound back in place.
    pub rebind: Vec<CString>,
    /// Folders readable (and runnable) to the command.
    pub readable: Vec<CString>,
    /// Devices readable and writable (`/dev/null`).
    pub devices: Vec<CString>,
}

const ON: libc::c_ulong = 1;
const OFF: libc::c_ulong = 0;

/// The `pre_exec` hook. Returns (to `exec` the command) only in the process that becomes it.
pub fn enter(plan: &Plan) -> io::Result<()> {
    // SAFETY, here and below: system calls on memory `plan` holds, in a process of one thread.
    unsafe {
        // A serve that dies takes its commands along. The signal comes when the thread that
        // spawned it ends: a runtime worker, which lives as long as the runtime (nothing here
        // uses `block_in_place`, which would hand a worker's thread over to end early).
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong))?;
        if libc::getppid() != plan.serve_pid {
            libc::_exit(1);
        }
        set_limit(libc::RLIMIT_CORE, 0, 0)?;
        if plan.namespaces {
            let mut flags =
                libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
            if !plan.network {
                flags |= libc::CLONE_NEWNET;
            }
            check(libc::unshare(flags))?;
            // This process waits for the init; the init for the command.
            fork_and_wait(false)?;
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong))?;
            fork_and_wait(true)?;
            mounts(plan)?;
            if !plan.network {
                loopback_up();
            }
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, ON, OFF, OFF, OFF))?;
        if let Some(handled) = &plan.landlock {
            confine(plan, handled)?;
        }
        for &(resource, soft, hard) in &plan.limits {
            set_limit(resource, soft, hard)?;
        }
        if let Some(account) = plan.account {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(account.gid, account.gid, account.gid))?;
            check(libc::setresuid(account.uid, account.uid, account.uid))?;
        }
        // Changing user cleared it; the command dies with the process that waits for it.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong))?;
    }
    Ok(())
}

/// Forks. The child returns; the parent lets go of every descriptor (the command's pipes,
/// `std`'s error pipe: it holds nothing of the command's) and waits for the child, reaping
/// every other child it is handed on the way when it is an init (`reap_all`), then exits
/// with the child's status: its exit code, or 128 plus the signal that killed it.
unsafe fn fork_and_wait(reap_all: bool) -> io::Result<()> {
    // A raw clone, not glibc's fork: its handlers are not for a process in this state.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        return Ok(());
    }
    let child = pid as libc::pid_t;
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        let mut status: libc::c_int = 0;
        loop {
            let waited = libc::waitpid(if reap_all { -1 } else { child }, &mut status, 0);
            if waited == child {
                break;
            }
            if waited < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        libc::_exit(code)
    }
}

/// The mount namespace: nothing mounted here reaches the host, private `/tmp` and
/// `/dev/shm`, daemons' sockets out of sight, the working folder back in place if it lay
/// under one of those, and a `/proc` of the new PID namespace (no other process to read).
unsafe fn mounts(plan: &Plan) -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    let tmpfs = c"tmpfs".as_ptr();
    unsafe {
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for folder in &plan.private {
            let options = plan.tmpfs_options.as_ptr().cast();
            check(libc::mount(
                tmpfs,
                folder.as_ptr(),
                tmpfs,
                libc::MS_NOSUID | libc::MS_NODEV,
                options,
            ))?;
        }
        for folder in &plan.hidden {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let options = plan.hidden_options.as_ptr().cast();
            check(libc::mount(tmpfs, folder.as_ptr(), tmpfs, flags, options))?;
        }
        if !plan.rebind.is_empty() {
            for folder in &plan.rebind {
                if libc::mkdir(folder.as_ptr(), 0o755) != 0
                    && *libc::__errno_location() != libc::EEXIST
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // `.` is the working folder (`std` went there before this hook): the real one,
            // whatever was mounted over the path since.
            check(libc::mount(
                c".".as_ptr(),
                plan.root.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            check(libc::chdir(plan.root.as_ptr()))?;
        }
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            proc_flags,
            std::ptr::null(),
        ))?;
    }
    Ok(())
}

/// Brings up the new network namespace's loopback, so that a program talking to itself
/// (a test binding 127.0.0.1) works. Best effort: without it there is simply no network.
unsafe fn loopback_up() {
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return;
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        }
        libc::close(socket);
    }
}

/// The Landlock ruleset: the system's folders readable, the working folder (and, with
/// namespaces, the private `/tmp` and `/dev/shm`) writable, nothing else reachable.
unsafe fn confine(plan: &Plan, handled: &Handled) -> io::Result<()> {
    let ruleset = landlock::create(handled);
    if ruleset < 0 {
        return Err(io::Error::last_os_error());
    }
    let writable: &[CString] = if plan.namespaces { &plan.private } else { &[] };
    let rules = [
        (plan.readable.as_slice(), handled.read()),
        (plan.devices.as_slice(), handled.device()),
        (writable, handled.all()),
        (std::slice::from_ref(&plan.root), handled.all()),
    ];
    for (paths, access) in rules {
        for path in paths {
            // SAFETY: opening a path the plan holds.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if fd < 0 {
                continue; // a folder this system does not have (`/lib32`)
            }
            let added = landlock::allow(ruleset, fd, access);
            close(fd);
            if added != 0 && path == &plan.root {
                return Err(io::Error::last_os_error());
            }
        }
    }
    let restricted = landlock::restrict_self(ruleset);
    close(ruleset);
    if restricted != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn close(fd: RawFd) {
    // SAFETY: a descriptor this module opened.
    unsafe { libc::close(fd) };
}

fn set_limit(
    resource: libc::__rlimit_resource_t,
    soft: libc::rlim_t,
    hard: libc::rlim_t,
) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: a plain system call on a struct alive for it.
    check(unsafe { libc::setrlimit(resource, &limit) })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
