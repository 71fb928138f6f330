//! The daemonized QEMU process, found through its pidfile and /proc.
//!
//! QEMU deletes its pidfile when it exits normally (guest power-off, `quit`,
//! SIGTERM). A pidfile whose process is gone therefore means QEMU died
//! abnormally (killed, crashed, host reboot).

use std::io::ErrorKind;
use std::path::Path;

use rustix::process::{Pid, Signal, kill_process};

use crate::driver::{Error, Result};

/// Linux reports process CPU times in clock ticks of 1/100 s (USER_HZ, fixed
/// by the kernel ABI on x86_64 whatever the kernel's HZ).
const NANOS_PER_TICK: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QemuProcess {
    Alive(Pid),
    /// No pidfile: QEMU never started or exited normally.
    Exited,
    /// A pidfile but no such QEMU: it died without cleaning up.
    Vanished,
}

pub(crate) fn find(pidfile: &Path) -> Result<QemuProcess> {
    let text = match std::fs::read_to_string(pidfile) {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(QemuProcess::Exited),
        Err(error) => return Err(Error::io(format!("reading {}", pidfile.display()))(error)),
    };
    let pid = text.trim().parse().ok().and_then(Pid::from_raw);
    Ok(match pid {
        Some(pid) if is_qemu_of(pid, pidfile) => QemuProcess::Alive(pid),
        // Empty while QEMU is still writing it, or a reused pid.
        _ => QemuProcess::Vanished,
    })
}

/// True if `pid` is a live process started with this pidfile. The check on the
/// command line guards against the pid having been reused since.
fn is_qemu_of(pid: Pid, pidfile: &Path) -> bool {
    let proc_dir = Path::new("/proc").join(pid.as_raw_nonzero().to_string());
    is_live_with_argument(&proc_dir, pidfile)
}

/// Live (not zombie) processes that have `argument` on their command line.
pub(crate) fn find_with_argument(argument: &Path) -> Result<Vec<Pid>> {
    let entries = std::fs::read_dir("/proc").map_err(Error::io("listing /proc"))?;
    Ok(entries
        .flatten()
        .filter_map(|entry| {
            let pid = Pid::from_raw(entry.file_name().to_str()?.parse().ok()?)?;
            is_live_with_argument(&entry.path(), argument).then_some(pid)
        })
        .collect())
}

fn is_live_with_argument(proc_dir: &Path, argument: &Path) -> bool {
    let is_zombie = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|stat| stat_fields(&stat).map(|fields| fields[0] == "Z"))
        .unwrap_or(true);
    if is_zombie {
        return false;
    }
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let argument = argument.as_os_str().as_encoded_bytes();
    cmdline.split(|&byte| byte == 0).any(|arg| arg == argument)
}

/// The fields of /proc/<pid>/stat after the command name, which may itself
/// contain spaces and parentheses; `fields[0]` is the state (field 3).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().collect())
}

pub(crate) fn kill(pid: Pid) -> Result<()> {
    match kill_process(pid, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(errno) => Err(Error::io(format!("killing process {pid:?}"))(errno.into())),
    }
}

/// User + system CPU time of all the process's threads.
pub(crate) fn cpu_time_ns(pid: Pid) -> Result<u64> {
    let path = format!("/proc/{}/stat", pid.as_raw_nonzero());
    let stat = std::fs::read_to_string(&path).map_err(Error::io(format!("reading {path}")))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks * NANOS_PER_TICK)
        .ok_or_else(|| Error::InvalidArgument(format!("unexpected {path}: {stat}")))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let fields = stat_fields(stat)?;
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state.
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some(ticks(11)? + ticks(12)?)
}

pub(crate) fn memory_rss_bytes(pid: Pid) -> Result<u64> {
    let path = format!("/proc/{}/status", pid.as_raw_nonzero());
    let status = std::fs::read_to_string(&path).map_err(Error::io(format!("reading {path}")))?;
    parse_rss_bytes(&status).ok_or_else(|| Error::InvalidArgument(format!("no VmRSS in {path}")))
}

fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (qemu) system x86) S 1 4241 4241 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5 0 1000 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_comes_from_vm_rss_in_kib() {
        let status = "Name:\tqemu\nVmPeak:\t 9000 kB\nVmRSS:\t  2048 kB\nThreads:\t5\n";
        assert_eq!(parse_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(parse_rss_bytes("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn a_missing_pidfile_means_exited() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            find(&dir.path().join("qemu.pid")).expect("find"),
            QemuProcess::Exited
        );
    }

    #[test]
    fn a_pidfile_naming_some_other_process_means_vanished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("qemu.pid");
        // Our own pid is alive but was not started with this pidfile.
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).expect("write");
        assert_eq!(find(&pidfile).expect("find"), QemuProcess::Vanished);
        std::fs::write(&pidfile, "").expect("write");
        assert_eq!(find(&pidfile).expect("find"), QemuProcess::Vanished);
    }

    #[test]
    fn a_process_started_with_the_pidfile_is_alive_until_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("qemu.pid");
        // The pidfile path is the shell's $0, so it shows in the command line.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; exit 0"])
            .arg(&pidfile)
            .spawn()
            .expect("spawn");
        std::fs::write(&pidfile, child.id().to_string()).expect("write");
        // Until the child has exec'd, its command line is still ours.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let pid = loop {
            if let QemuProcess::Alive(pid) = find(&pidfile).expect("find") {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "never seen alive");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(cpu_time_ns(pid).is_ok());
        assert!(memory_rss_bytes(pid).expect("memory rss bytes") > 0);
        assert_eq!(find_with_argument(&pidfile).expect("find"), [pid]);

        kill(pid).expect("kill");
        child.wait().expect("wait");
        assert_eq!(find(&pidfile).expect("find"), QemuProcess::Vanished);
        assert_eq!(find_with_argument(&pidfile).expect("find"), []);
    }
}
