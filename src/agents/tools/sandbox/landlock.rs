//! The few Landlock system calls the sandbox makes, through `libc::syscall`: the kernel's ABI
//! version, and a ruleset built and applied in the child between `fork` and `exec`.
//!
//! Not the `landlock` crate: its rules are opened through `std` (an allocation), and the
//! private `/tmp` a rule must name exists only in the child, after its mount, where nothing
//! may allocate. Every function here is a plain system call on memory prepared beforehand.

use std::os::fd::RawFd;

pub const ACCESS_EXECUTE: u64 = 1 << 0;
pub const ACCESS_WRITE_FILE: u64 = 1 << 1;
pub const ACCESS_READ_FILE: u64 = 1 << 2;
pub const ACCESS_READ_DIR: u64 = 1 << 3;
/// Every filesystem right of ABI 1 (removing, making files, folders, links, devices, ...).
const ACCESS_FS_V1: u64 = (1 << 13) - 1;
const ACCESS_REFER: u64 = 1 << 13;
pub const ACCESS_TRUNCATE: u64 = 1 << 14;
const ACCESS_IOCTL_DEV: u64 = 1 << 15;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;

/// `struct landlock_ruleset_attr`, in its ABI 6 size; an older kernel takes the longer
/// struct as long as the fields it does not know are zero.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed, as the kernel declares it).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version the kernel offers; 0 when it has none (not built in, or off).
pub fn abi() -> u32 {
    // SAFETY: the version query takes no pointer.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(version).unwrap_or(0)
}

/// What a ruleset handles at `abi`: every filesystem right that ABI knows, TCP when
/// `deny_tcp`, and (from ABI 6) signals and abstract sockets beyond the sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Handled {
    pub fs: u64,
    pub net: u64,
    pub scoped: u64,
}

impl Handled {
    pub fn at(abi: u32, deny_tcp: bool) -> Handled {
        let mut fs = ACCESS_FS_V1;
        if abi >= 2 {
            fs |= ACCESS_REFER;
        }
        if abi >= 3 {
            fs |= ACCESS_TRUNCATE;
        }
        if abi >= 5 {
            fs |= ACCESS_IOCTL_DEV;
        }
        let net = if abi >= 4 && deny_tcp { NET_BIND_TCP | NET_CONNECT_TCP } else { 0 };
        let scoped = if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 };
        Handled { fs, net, scoped }
    }

    /// The rights for reading and running what is beneath a folder.
    pub fn read(&self) -> u64 {
        (ACCESS_EXECUTE | ACCESS_READ_FILE | ACCESS_READ_DIR) & self.fs
    }

    /// Every right this ruleset handles: what the working folder and the private `/tmp` get.
    pub fn all(&self) -> u64 {
        self.fs
    }

    /// Reading and writing a device such as `/dev/null`.
    pub fn device(&self) -> u64 {
        (ACCESS_READ_FILE | ACCESS_WRITE_FILE | ACCESS_TRUNCATE) & self.fs
    }
}

/// A new ruleset handling `handled`; its descriptor, or -1 with `errno` set.
/// Async-signal-safe.
pub fn create(handled: &Handled) -> RawFd {
    let attr = RulesetAttr {
        handled_access_fs: handled.fs,
        handled_access_net: handled.net,
        scoped: handled.scoped,
    };
    // SAFETY: `attr` is a valid struct of the size given, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    fd as RawFd
}

/// Allows `access` beneath the folder or file open as `parent` (an `O_PATH` descriptor).
/// Async-signal-safe. 0, or -1 with `errno` set.
pub fn allow(ruleset: RawFd, parent: RawFd, access: u64) -> libc::c_long {
    let attr = PathBeneathAttr { allowed_access: access, parent_fd: parent };
    // SAFETY: `attr` is a valid struct, alive for the call.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    }
}

/// Confines the calling process (and all it starts) to the ruleset. Needs `no_new_privs`
/// (set by the caller). Async-signal-safe. 0, or -1 with `errno` set.
pub fn restrict_self(ruleset: RawFd) -> libc::c_long {
    // SAFETY: a plain system call on a descriptor.
    unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) }
}
