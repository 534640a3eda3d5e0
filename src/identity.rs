//! Who this process is, as the other processes against the same database tell it apart: a fleet
//! member, the holder of the repair lease. Read from the kernel (`/proc`) once, at start.
//!
//! A host name and a pid do not name a process: two containers can share a host name, the
//! kernel's boot id and pid numbers (each pid 1 of its own namespace). The pid namespace
//! (`/proc/self/ns/pid`, `pid:[inode]`) tells them apart on one kernel, the boot id tells kernels
//! apart, and the process's start time tells a pid reused from the process that had it.

use serde::{Deserialize, Serialize};

/// One process, as recorded in the service's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The host's name as the kernel has it (a pod's name under Kubernetes).
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`; empty where it cannot be read.
    pub boot_id: String,
    /// The target of `/proc/self/ns/pid`, `pid:[inode]`; empty where it cannot be read.
    pub pid_ns: String,
    pub pid: i32,
    /// When the process started, in clock ticks since boot (`starttime` of `/proc/PID/stat`); 0
    /// where it cannot be read.
    pub started: i64,
}

impl ProcessIdentity {
    /// This process.
    pub fn this_process() -> Self {
        // Linux pids are at most 2^22.
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        Self {
            host: host_name(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|id| id.trim().to_string())
                .unwrap_or_default(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|target| target.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid,
            started: process_started(pid).unwrap_or(0),
        }
    }

    /// Whether `other` is a process of this kernel and pid namespace, whose pid this process can
    /// look up.
    pub fn shares_pids_with(&self, other: &ProcessIdentity) -> bool {
        !self.boot_id.is_empty()
            && !self.pid_ns.is_empty()
            && other.started != 0
            && self.boot_id == other.boot_id
            && self.pid_ns == other.pid_ns
    }

    /// Whether `other` still runs: `Some` only for a process whose pid this one can look up
    /// ([`Self::shares_pids_with`]); `None` for one elsewhere, which only its silence can tell.
    pub fn sees_alive(&self, other: &ProcessIdentity) -> Option<bool> {
        self.shares_pids_with(other)
            .then(|| process_started(other.pid) == Some(other.started))
    }
}

/// When process `pid` of this pid namespace started, in clock ticks since boot; `None` when no
/// such process runs.
pub fn process_started(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state is field 3, starttime field 22.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    fields.get(19)?.parse().ok()
}

/// The host's name as the kernel has it (a pod's name under Kubernetes), else `$HOSTNAME`, else
/// `unknown-host`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_or_reused_pid_is_not() {
        let me = ProcessIdentity::this_process();
        assert!(me.started > 0 && !me.boot_id.is_empty() && me.pid_ns.starts_with("pid:["));
        assert_eq!(me.sees_alive(&me), Some(true));
        // The same pid started at another time: the pid was reused.
        let reused = ProcessIdentity {
            started: me.started + 1,
            ..me.clone()
        };
        assert_eq!(me.sees_alive(&reused), Some(false));
        // A pid no process has (above the kernel's maximum).
        let gone = ProcessIdentity {
            pid: 1 << 23,
            ..me.clone()
        };
        assert_eq!(me.sees_alive(&gone), Some(false));
    }

    #[test]
    fn another_pid_namespace_or_kernel_cannot_be_looked_up() {
        let me = ProcessIdentity::this_process();
        let other_container = ProcessIdentity {
            pid_ns: "pid:[1]".into(),
            ..me.clone()
        };
        assert_eq!(me.sees_alive(&other_container), None);
        let other_kernel = ProcessIdentity {
            boot_id: "another".into(),
            ..me.clone()
        };
        assert_eq!(me.sees_alive(&other_kernel), None);
        let unknown_start = ProcessIdentity {
            started: 0,
            ..me.clone()
        };
        assert_eq!(me.sees_alive(&unknown_start), None);
    }
}
