//! The source copy of a container held during a migration: frozen, and cut from the network, so
//! that nothing it does or receives can diverge from the CRIU images on their way. A failed
//! migration resumes it where it was in milliseconds (network back, thawed), with no CRIU restore;
//! a successful one ends it.
//!
//! CRIU's own network lock does not last: a dump that leaves the tasks running takes its iptables
//! rules away and its sockets out of repair mode before it returns. So CRIU runs ckpt-dump itself
//! as its `action-script`, and at `post-dump` (images written, CRIU's lock still in place) ckpt-dump
//! adds a DROP chain in the container's network namespace: no gap, and the rules are not in the
//! images. A host-side cut before the dump would be (the routes of a downed veth restore as
//! `linkdown` and fail).

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::freezer;
use crate::lxc::Container;
use crate::procs::has_own_netns;

/// The iptables chain that holds a container's network.
pub const CHAIN: &str = "CKPTHOLD";
/// The environment variable CRIU sets when it runs an action script.
pub const ACTION_ENV: &str = "CRTOOLS_SCRIPT_ACTION";
/// The pid of the dumped tree's root (the container's init), which CRIU sets for action scripts.
const INIT_PID_ENV: &str = "CRTOOLS_INIT_PID";

/// What ckpt-dump does when CRIU runs it as its action script: at `post-dump`, cut the network of
/// the dumped container; every other action is none of its business. An error makes CRIU fail
/// the dump (and resume the tasks), which is right: an uncut source must not be held.
pub fn action_script(action: &str) -> anyhow::Result<()> {
    if action != "post-dump" {
        return Ok(());
    }
    let pid: u32 = std::env::var(INIT_PID_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("CRIU ran the post-dump script without {INIT_PID_ENV}"))?;
    cut(pid)?;
    // A lazy dump goes on to serve pages: tell ckpt-dump the images are complete.
    if let Some(mark) = std::env::var_os(POST_DUMP_MARK_ENV) {
        std::fs::write(&mark, b"").context("marking the end of the images")?;
    }
    Ok(())
}

/// A file the post-dump action creates once the images are written and the network is cut.
pub const POST_DUMP_MARK_ENV: &str = "CKPT_POST_DUMP_MARK";

/// Cuts the network of the namespace `pid` is in: every packet in or out is dropped (IPv4 and,
/// where the kernel has it, IPv6). A process in this process's own namespace is left alone:
/// cutting it would cut the host.
pub fn cut(pid: u32) -> anyhow::Result<()> {
    if !has_own_netns(pid).with_context(|| format!("process {pid} is gone"))? {
        return Ok(());
    }
    let rules = format!(
        "*filter\n:{CHAIN} - [0:0]\n-I INPUT -j {CHAIN}\n-I OUTPUT -j {CHAIN}\n-A {CHAIN} -j DROP\nCOMMIT\n"
    );
    restore_rules(pid, "iptables-restore", &rules).context("cutting the container's network")?;
    // Without IPv6 in the kernel there is no IPv6 traffic to cut.
    let _ = restore_rules(pid, "ip6tables-restore", &rules);
    Ok(())
}

/// Undoes [`cut`] (nothing to do when the network is not cut).
pub fn reconnect(pid: u32) -> anyhow::Result<()> {
    if !has_own_netns(pid).with_context(|| format!("process {pid} is gone"))? || !is_cut(pid) {
        return Ok(());
    }
    let rules = format!(
        "*filter\n-D INPUT -j {CHAIN}\n-D OUTPUT -j {CHAIN}\n-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n"
    );
    restore_rules(pid, "iptables-restore", &rules)
        .context("reconnecting the container's network")?;
    let _ = restore_rules(pid, "ip6tables-restore", &rules);
    Ok(())
}

/// Whether the network of `pid`'s namespace is cut by [`cut`].
pub fn is_cut(pid: u32) -> bool {
    Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "iptables",
            "-w",
            "-n",
            "-L",
            CHAIN,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Resumes a held source container where it was: network back, thawed, its addresses announced
/// again (the destination may have claimed them meanwhile).
pub fn resume(container: &Container) -> anyhow::Result<()> {
    let pid = container
        .init_pid()
        .with_context(|| format!("{} does not run here any more", container.name))?;
    let reconnected = reconnect(pid);
    freezer::thaw(container);
    crate::checkpoint::announce(container);
    reconnected
}

/// Ends a held source container once the destination runs it: its tasks are killed while its
/// network is still cut, so its sockets say nothing to the peers that now talk to the destination.
pub fn end(container: &Container) -> anyhow::Result<()> {
    container.lxc("lxc-stop", &["-k"])?;
    Ok(())
}

/// Feeds `rules` to `program` (iptables-restore or ip6tables-restore) in `pid`'s network namespace.
fn restore_rules(pid: u32, program: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", program, "-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running nsenter {program} (install iptables and util-linux)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "{program} in the netns of {pid} failed: {}",
            stderr.lines().next().unwrap_or("no message")
        );
    }
    Ok(())
}
