//! The Debian package on this very machine: pkg/build-deb (what `make deb` runs) packages the
//! binaries under test, lintian finds nothing wrong, `dpkg -i` installs it, the installed tools,
//! man pages and bash completion work, and `dpkg --purge` leaves nothing behind. Root only.

mod util;

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use util::{require_root, Dir, Run, TOOLS};

const PKG: &str = "ckpt";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Serializes runs of this test (other worktrees, a second `make test`) on one machine.
const LOCK: &str = "/run/lock/ckpt-package-test.lock";
/// Exists from just before `dpkg -i` until the purge: a run killed in between left the package
/// installed, and the next run purges it first. Without it, an installed ckpt is the admin's.
const STAMP: &str = "/var/lib/ckpt-package-test.installed";

#[test]
fn deb_installs_works_and_purges_without_a_trace() {
    require_root("tests/package.rs (dpkg -i and dpkg --purge of the ckpt package)");
    let t = Dir::new("package");
    let _lock = lock();
    purge_what_a_killed_run_left(&t);
    assert!(
        package_status(&t).is_none(),
        "the {PKG} package is installed on this machine, not by this test; the test would replace \
         and purge it: remove it first (dpkg --purge {PKG})"
    );

    let deb = build_deb(&t);
    // Errors and warnings fail; informational tags are only printed.
    let lint = t
        .program("lintian")
        .args(["--fail-on", "error,warning", "--info"])
        .arg(&deb)
        .ok();
    if !lint.stdout_str().is_empty() {
        eprintln!("lintian:\n{}", lint.stdout_str());
    }

    std::fs::write(STAMP, "installed by tests/package.rs\n").unwrap();
    let installed = Installed { dir: &t };
    dpkg(&t, &[OsStr::new("-i"), deb.as_os_str()]);
    let owned = owned_paths(&t);
    for path in expected_files() {
        assert!(
            owned.iter().any(|p| p.path == path),
            "dpkg -L {PKG} does not list {}",
            path.display()
        );
    }

    for tool in TOOLS {
        let run = t.program(format!("/usr/bin/{tool}")).arg("--version").ok();
        if run.stdout_str() != format!("{tool} {VERSION}\n") {
            run.fail(&format!("expected \"{tool} {VERSION}\""));
        }
    }
    let pages = t.program("man").args(["-aw", "ckpt-dump"]).ok();
    if !pages
        .stdout_str()
        .lines()
        .any(|p| p == "/usr/share/man/man1/ckpt-dump.1.gz")
    {
        pages.fail("man -w does not find the installed ckpt-dump(1)");
    }
    let completion = bash_complete(&t, &["ckpt-dump", "--"]);
    let words: Vec<String> = completion
        .stdout_str()
        .lines()
        .map(str::to_string)
        .collect();
    for flag in [
        "--leave-running",
        "--ack",
        "--lxcpath",
        "--no-precopy",
        "--quiet",
    ] {
        if !words.iter().any(|w| w == flag) {
            completion.fail(&format!("bash completes `ckpt-dump --` without {flag}"));
        }
    }
    if words.iter().any(|w| w == "--gen-completions") {
        completion.fail("bash completes the hidden --gen-completions");
    }

    dpkg(&t, &[OsStr::new("--purge"), OsStr::new(PKG)]);
    drop(installed);
    if let Some(status) = package_status(&t) {
        panic!("after dpkg --purge, dpkg-query says {PKG} is {status:?}");
    }
    for entry in &owned {
        assert_gone(&t, entry);
    }
    let info = Path::new("/var/lib/dpkg/info");
    for file in std::fs::read_dir(info).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(&format!("{PKG}.")),
            "dpkg --purge left {}",
            file.path().display()
        );
    }
    let pages = t.program("man").args(["-aw", "ckpt-dump"]).output();
    if pages.stdout_str().contains("/usr/share/man/") {
        pages.fail("man still finds ckpt-dump(1) in /usr/share/man after the purge");
    }
}

/// Takes the machine-wide lock of this test; released when the file is closed.
fn lock() -> File {
    let file = File::create(LOCK).unwrap_or_else(|e| panic!("{LOCK}: {e}"));
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("flock {LOCK}: {e}"));
    file
}

fn purge_what_a_killed_run_left(t: &Dir) {
    if !Path::new(STAMP).exists() {
        return;
    }
    eprintln!("{STAMP} exists: purging the package an earlier run left installed");
    if package_status(t).is_some() {
        dpkg(t, &[OsStr::new("--purge"), OsStr::new(PKG)]);
    }
    std::fs::remove_file(STAMP).unwrap();
}

/// Purges the package when the test fails between `dpkg -i` and its own purge.
struct Installed<'a> {
    dir: &'a Dir,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if package_status(self.dir).is_some() {
            let purge = self.dir.program("dpkg").args(["--purge", PKG]).output();
            if purge.code() != Some(0) {
                eprintln!(
                    "cleanup: dpkg --purge {PKG} failed:\n{}",
                    purge.stderr_str()
                );
                return; // keep the stamp: the next run purges it
            }
        }
        let _ = std::fs::remove_file(STAMP);
    }
}

/// Runs pkg/build-deb on the binaries cargo built for this test; returns the package's path.
fn build_deb(t: &Dir) -> PathBuf {
    let bindir = util::bin("ckpt-dump").parent().unwrap().to_path_buf();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/build-deb");
    let run = t.program(script).arg(&bindir).arg(t.join("out")).ok();
    let deb = PathBuf::from(run.stdout_str().trim());
    let arch = t
        .program("dpkg")
        .arg("--print-architecture")
        .ok()
        .stdout_str();
    let want = format!(
        "{PKG}_{}_{}.deb",
        VERSION.replacen('-', "~", 1),
        arch.trim()
    );
    if deb.file_name().and_then(|n| n.to_str()) != Some(want.as_str()) || !deb.is_file() {
        run.fail(&format!("expected pkg/build-deb to write {want}"));
    }
    deb
}

/// Runs dpkg, waiting while another dpkg or apt holds its lock (a parallel `make deps`).
fn dpkg(t: &Dir, args: &[&OsStr]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let run = t.program("dpkg").args(args).output();
        if run.code() == Some(0) {
            return run;
        }
        if !run.stderr_str().contains("lock") || Instant::now() > deadline {
            run.fail("dpkg failed");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// dpkg's status of the package, None when dpkg knows nothing of it (never installed, or purged).
fn package_status(t: &Dir) -> Option<String> {
    let run = t
        .program("dpkg-query")
        .args(["-W", "-f=${Status}", PKG])
        .output();
    let status = run.stdout_str();
    (run.code() == Some(0) && !status.ends_with("not-installed")).then_some(status)
}

struct Owned {
    path: PathBuf,
    is_dir: bool,
}

/// Every path `dpkg -L` lists for the package, and whether it is a directory.
fn owned_paths(t: &Dir) -> Vec<Owned> {
    let run = t.program("dpkg").args(["-L", PKG]).ok();
    let owned: Vec<Owned> = run
        .stdout_str()
        .lines()
        .filter(|l| l.starts_with('/') && *l != "/.")
        .map(|l| {
            let path = PathBuf::from(l);
            let meta = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("dpkg -L lists {l}, which is missing: {e}"));
            Owned {
                path,
                is_dir: meta.is_dir(),
            }
        })
        .collect();
    if owned.iter().filter(|o| !o.is_dir).count() < TOOLS.len() {
        run.fail("dpkg -L lists fewer files than there are tools");
    }
    owned
}

fn expected_files() -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from("/usr/share/doc/ckpt/copyright"),
        PathBuf::from("/usr/share/man/man5/ckpt-stream.5.gz"),
    ];
    for tool in TOOLS {
        files.extend([
            format!("/usr/bin/{tool}").into(),
            format!("/usr/share/man/man1/{tool}.1.gz").into(),
            format!("/usr/share/bash-completion/completions/{tool}").into(),
            format!("/usr/share/zsh/vendor-completions/_{tool}").into(),
            format!("/usr/share/fish/vendor_completions.d/{tool}.fish").into(),
        ]);
    }
    files
}

/// A file the package owned must be gone; a directory may stay only when it is another
/// package's too or holds files that are not the package's.
fn assert_gone(t: &Dir, entry: &Owned) {
    let path = &entry.path;
    if std::fs::symlink_metadata(path).is_err() {
        return;
    }
    assert!(entry.is_dir, "dpkg --purge left {}", path.display());
    let shared = t.program("dpkg").arg("-S").arg(path).output().code() == Some(0);
    let holds_others = std::fs::read_dir(path).unwrap().next().is_some();
    assert!(
        shared || holds_others,
        "dpkg --purge left the empty directory {} that no package owns",
        path.display()
    );
}

/// The words bash-completion offers for `words` (the cursor after the last one), loading the
/// completion from where bash-completion looks for it on demand, and only from /usr/share.
fn bash_complete(t: &Dir, words: &[&str]) -> Run {
    let script = r#"
        . /usr/share/bash-completion/bash_completion
        if declare -F _comp_load >/dev/null; then _comp_load "$1"; else __load_completion "$1"; fi \
            || { echo "bash-completion found no completion for $1" >&2; exit 3; }
        fn=$(complete -p "$1" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
        [ -n "$fn" ] || { echo "no completion function: $(complete -p "$1")" >&2; exit 4; }
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    t.program("bash")
        .args(["--norc", "--noprofile", "-c", script, "bash"])
        .args(words)
        .env("PATH", "/usr/bin:/bin")
        .env("XDG_DATA_DIRS", "/usr/share")
        .env("BASH_COMPLETION_USER_DIR", t.join("no-user-completions"))
        .ok()
}
