//! Facts about this host that a manifest records and a receiver compares: name, kernel, arch, CPU
//! flags, and the CRIU and LXC versions.

use std::process::Command;

use ckpt_stream::format::{Include, Manifest, FORMAT_NAME, FORMAT_VERSION};

/// What `uname` says about this host.
pub struct Uname {
    pub host: String,
    pub kernel: String,
    pub arch: String,
}

pub fn uname() -> Uname {
    let u = rustix::system::uname();
    let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
    Uname {
        host: text(u.nodename()),
        kernel: text(u.release()),
        arch: text(u.machine()),
    }
}

/// CPU feature flags from /proc/cpuinfo (first CPU), sorted.
pub fn cpu_flags() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut flags: Vec<String> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    flags.sort();
    flags
}

/// First line of `program args` stdout, when it runs.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

/// The installed CRIU version, e.g. `4.2.1`, from `criu --version` ("Version: 4.2.1").
pub fn criu_version() -> Option<String> {
    let line = first_line("criu", &["--version"])?;
    Some(line.trim_start_matches("Version:").trim().to_string())
}

/// The installed LXC version, from `lxc-start --version`.
pub fn lxc_version() -> Option<String> {
    first_line("lxc-start", &["--version"])
}

/// A manifest describing a stream made on this host now.
pub fn manifest(name: &str, lxcpath: &str, include: Include) -> Manifest {
    let u = uname();
    Manifest {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        name: name.to_string(),
        lxcpath: lxcpath.to_string(),
        host: u.host,
        kernel: u.kernel,
        arch: u.arch,
        criu: if include.images { criu_version() } else { None },
        lxc: lxc_version(),
        ckpt: ckpt_stream::VERSION.to_string(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        include,
        cpu_flags: cpu_flags(),
        await_copy: false,
        memory: Default::default(),
    }
}

/// Compares dotted versions numerically: `4.10` > `4.2`.
pub fn version_at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split('.')
            .map(|p| p.trim().parse().unwrap_or(0))
            .collect()
    };
    parse(version) >= parse(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("4.2.1", "4.2"));
        assert!(version_at_least("4.10", "4.2"));
        assert!(!version_at_least("4.1.1", "4.2"));
        assert!(!version_at_least("3.17.1", "4.2"));
    }

    #[test]
    fn uname_is_filled() {
        let u = uname();
        assert!(!u.kernel.is_empty() && !u.arch.is_empty());
    }
}
