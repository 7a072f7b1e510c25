//! File leases (`F_SETLEASE`, e.g. Samba's oplocks) from /proc/locks: opening a leased file breaks
//! the lease (its holder gets SIGIO, which kills it by default) or, when the holder is frozen, waits
//! `fs.lease-break-time` (45 s). A reader that must not disturb a container asks here first, and
//! reads a leased file through its holder's own descriptor, which is no new open.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use rustix::fs::OFlags;
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};

/// The files some process holds a lease on, by (st_dev, st_ino), with the holders' PIDs as this
/// pid namespace sees them (0 when the holder is not visible from here).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leases {
    held: HashMap<(u64, u64), Vec<u32>>,
}

impl Leases {
    /// The leases in /proc/locks now (none when it cannot be read).
    pub fn now() -> Leases {
        std::fs::read_to_string("/proc/locks")
            .map(|locks| Leases::parse(&locks))
            .unwrap_or_default()
    }

    /// Parses the text of /proc/locks: every `LEASE` line (active or being broken) counts; other
    /// locks (POSIX, FLOCK, OFDLCK) do not stop an open, and `->` lines are waiters, not holders.
    pub fn parse(locks: &str) -> Leases {
        let mut leases = Leases::default();
        for (file, pid) in locks.lines().filter_map(parse_lease) {
            leases.held.entry(file).or_default().push(pid);
        }
        leases
    }

    /// Whether a lease is held on the file with this `st_dev` and `st_ino`.
    pub fn is_leased(&self, dev: u64, ino: u64) -> bool {
        self.held.contains_key(&(dev, ino))
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// A readable descriptor of the leased file (`dev`, `ino`) taken from one of its holders with
    /// pidfd_getfd(2): the holder's own open file, so the lease is not broken and a frozen holder is
    /// not waited for. It shares the holder's file offset: read it with positional reads only.
    /// `None` when no holder can be found with it open for reading (gone, or write-only).
    pub fn holder_file(&self, dev: u64, ino: u64) -> Option<File> {
        self.held
            .get(&(dev, ino))?
            .iter()
            .filter(|&&pid| pid != 0)
            .find_map(|&pid| holder_file(pid, dev, ino))
    }
}

/// The holder's descriptor of (`dev`, `ino`), found by stat(2) of /proc/PID/fd/N (which follows the
/// link without opening the file).
fn holder_file(pid: u32, dev: u64, ino: u64) -> Option<File> {
    let pidfd =
        rustix::process::pidfd_open(Pid::from_raw(pid as i32)?, PidfdFlags::empty()).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.flatten().find_map(|fd| {
        let meta = std::fs::metadata(fd.path()).ok()?;
        if (meta.dev(), meta.ino()) != (dev, ino) {
            return None;
        }
        let number: i32 = fd.file_name().to_str()?.parse().ok()?;
        let file = rustix::process::pidfd_getfd(&pidfd, number, PidfdGetfdFlags::empty()).ok()?;
        let mode = rustix::fs::fcntl_getfl(&file).ok()? & OFlags::RWMODE;
        (mode != OFlags::WRONLY).then(|| File::from(file))
    })
}

/// `ID: LEASE STATE TYPE PID MAJ:MIN:INODE START END` → ((dev, ino), pid); major and minor are
/// hex, the inode decimal.
fn parse_lease(line: &str) -> Option<((u64, u64), u32)> {
    let mut fields = line.split_ascii_whitespace().skip(1);
    if fields.next()? != "LEASE" {
        return None; // another kind of lock, or `->` (a process blocked on a lock)
    }
    let pid: u32 = fields.nth(2)?.parse().ok()?;
    let mut file = fields.next()?.split(':');
    let major = u32::from_str_radix(file.next()?, 16).ok()?;
    let minor = u32::from_str_radix(file.next()?, 16).ok()?;
    let ino: u64 = file.next()?.parse().ok()?;
    Some(((rustix::fs::makedev(major, minor), ino), pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "\
1: LEASE  BREAKING  READ 24665 fe:00:876868 0 EOF
1: -> LEASE  BREAKER  READ 30001 <none>:0 0 EOF
2: POSIX  ADVISORY  WRITE 812 fe:00:1311 0 EOF
3: FLOCK  ADVISORY  WRITE 20535 fe:00:5406866 0 EOF
3: -> FLOCK  ADVISORY  WRITE 20600 fe:00:5406866 0 EOF
4: OFDLCK ADVISORY  READ -1 00:1a:42 0 0
5: LEASE  ACTIVE    WRITE 481 103:02:10027379 0 EOF
6: LEASE  ACTIVE    READ 77 08:11:99 0 EOF
7: LEASE  ACTIVE    READ 78 08:11:99 0 EOF
8: DELEG  ACTIVE    READ 0 08:11:100 0 EOF
";

    #[test]
    fn lease_lines_are_parsed() {
        let leases = Leases::parse(LOCKS);
        let fe00 = rustix::fs::makedev(0xfe, 0);
        assert!(
            leases.is_leased(fe00, 876868),
            "a breaking lease still holds"
        );
        assert!(leases.is_leased(rustix::fs::makedev(0x103, 2), 10027379));
        assert_eq!(
            leases.held.get(&(rustix::fs::makedev(8, 0x11), 99)),
            Some(&vec![77, 78])
        );
        assert!(
            !leases.is_leased(fe00, 1311),
            "POSIX locks do not stop an open"
        );
        assert!(!leases.is_leased(fe00, 5406866), "nor FLOCK");
        assert!(!leases.is_leased(rustix::fs::makedev(0, 0x1a), 42));
        assert_eq!(leases.held.len(), 3, "{leases:?}");
        assert!(Leases::parse("").is_empty());
        assert!(Leases::parse("garbage\n1: LEASE\n").is_empty());
    }

    #[test]
    fn a_leased_file_is_read_through_its_holder() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leased");
        let mut held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        held.write_all(b"leased data").unwrap();
        // SAFETY: fcntl on a descriptor this test owns, with integer arguments.
        let taken = unsafe { libc::fcntl(held.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        assert_eq!(taken, 0, "F_SETLEASE: {}", std::io::Error::last_os_error());
        let meta = std::fs::metadata(&path).unwrap();
        let leases = Leases::now();
        assert!(leases.is_leased(meta.dev(), meta.ino()), "{leases:?}");
        let file = leases
            .holder_file(meta.dev(), meta.ino())
            .expect("this process's descriptor");
        let mut data = [0u8; 11];
        file.read_exact_at(&mut data, 0).unwrap();
        assert_eq!(&data, b"leased data");
        // SAFETY: as above.
        let lease = unsafe { libc::fcntl(held.as_raw_fd(), libc::F_GETLEASE) };
        assert_eq!(lease, libc::F_WRLCK, "reading broke the lease");
    }

    #[test]
    fn this_hosts_locks_parse() {
        // Whatever is in /proc/locks now, reading it works and finds only LEASE lines.
        let text = std::fs::read_to_string("/proc/locks").unwrap();
        let leases = Leases::now();
        let lines = text.lines().filter(|l| l.contains(" LEASE ")).count();
        assert!(leases.held.values().map(Vec::len).sum::<usize>() <= lines);
    }
}
