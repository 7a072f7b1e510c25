//! lxc-fixtty: makes a container checkpointable by CRIU (the seed's tty and console workaround in
//! today's LXC keys, regular-file ttys in the rootfs, no getty on a tty, no AppArmor lines on a
//! kernel without AppArmor, the seccomp denials a systemd container needs), or only checks it, or
//! shows what it would change.

mod devtty;
mod inittab;
mod problem;
mod settings;
mod systemd;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::lxc::atomic::{self, Perms};
use crate::lxc::{self, CgroupVersion, Config, Container};

use devtty::DevDir;
use inittab::Inittab;
pub use problem::{Found, NodeKind, Problem, Target, CONSOLE_DENY};
pub use systemd::{Denial, PROFILE as SECCOMP_PROFILE};

/// The tool name in messages.
const TOOL: &str = "lxc-fixtty";
/// Name of the backup of the original config, in the container dir.
pub const CONFIG_BACKUP: &str = "config.ckpt-orig";

/// What lxc-fixtty does with the problems it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fix them (the container must be stopped).
    Fix,
    /// Change nothing; fail listing them.
    Check,
    /// Change nothing; print what fixing would change.
    DryRun,
}

/// One lxc-fixtty run, as parsed from the command line.
#[derive(Debug, Clone)]
pub struct FixConfig {
    /// The lxcpath from `-P`, or `None` for LXC's default.
    pub lxcpath: Option<PathBuf>,
    pub name: String,
    pub mode: Mode,
    /// Print only errors.
    pub quiet: bool,
}

/// Facts about this host that decide what a container needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Which cgroup version's keys control devices here.
    pub devices: CgroupVersion,
    /// Whether the kernel has AppArmor (else every AppArmor setting breaks a restore).
    pub apparmor: bool,
}

impl Host {
    pub fn detect() -> Host {
        Host {
            devices: lxc::devices_cgroup_version(),
            apparmor: lxc::apparmor_enabled(),
        }
    }
}

/// Runs lxc-fixtty on this host.
pub fn run(cfg: &FixConfig) -> anyhow::Result<()> {
    let container = Container::locate(&cfg.name, cfg.lxcpath.as_deref())?;
    let survey = Survey::take(&container, &Host::detect())?;
    let say = |msg: &str| {
        if !cfg.quiet {
            eprintln!("{TOOL}: {}: {msg}", container.name);
        }
    };
    match cfg.mode {
        Mode::Check => check(&survey, cfg, &say),
        Mode::DryRun => {
            dry_run(&survey, &say);
            Ok(())
        }
        Mode::Fix => fix(&survey, &say),
    }
}

/// The gate before a dump (ckpt-dump): fails in one line, naming the first problem, when the
/// container has a problem that makes CRIU fail. Config problems always count; rootfs /dev
/// problems only with `lxc.autodev = 0` (otherwise LXC mounts a fresh /dev over the rootfs's);
/// inittab lines do not (they only make init respawn a getty that cannot start).
pub fn ensure_checkpointable(container: &Container) -> anyhow::Result<()> {
    let survey = Survey::take(container, &Host::detect())?;
    let autodev = survey.config.get("lxc.autodev") != Some("0");
    let blocking: Vec<&Problem> = survey
        .problems
        .iter()
        .filter(|p| match p.target() {
            Target::Config => true,
            Target::Dev => !autodev,
            Target::Inittab => false,
        })
        .collect();
    let Some(first) = blocking.first() else {
        return Ok(());
    };
    let more = match blocking.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    anyhow::bail!(
        "container {name} is not checkpointable: {first}{more}: stop it and run {TOOL} -P {} {name} \
         ({TOOL} --check lists every problem)",
        container.lxcpath.display(),
        name = container.name
    )
}

/// Everything lxc-fixtty looked at, and the problems it found there.
pub struct Survey {
    container: Container,
    config: Config,
    dev: Option<DevDir>,
    inittab: Option<Inittab>,
    pub problems: Vec<Problem>,
}

impl Survey {
    /// Reads the container's config and rootfs (changing nothing) and lists its problems.
    pub fn take(container: &Container, host: &Host) -> anyhow::Result<Survey> {
        let config = container.load_config()?;
        let rootfs_path = container.rootfs_in(&config)?;
        let rootfs: OwnedFd = File::open(&rootfs_path)
            .and_then(|f| {
                if f.metadata()?.is_dir() {
                    Ok(f)
                } else {
                    Err(std::io::Error::other("not a directory"))
                }
            })
            .with_context(|| {
                format!(
                    "cannot open the rootfs {} of container {}",
                    rootfs_path.display(),
                    container.name
                )
            })?
            .into();
        let dev = devtty::open(&rootfs, &rootfs_path)?;
        let inittab = inittab::open(&rootfs, &rootfs_path)?;
        let mut problems = Vec::new();
        settings::survey(&config, host, &mut problems);
        systemd::survey(&config, &rootfs_path, &container.dir(), &mut problems);
        if let Some(dev) = &dev {
            devtty::survey(dev, &mut problems)?;
        }
        if let Some(inittab) = &inittab {
            inittab::survey(inittab, &mut problems);
        }
        Ok(Survey {
            container: container.clone(),
            config,
            dev,
            inittab,
            problems,
        })
    }

    fn of(&self, target: Target) -> impl Iterator<Item = &Problem> + '_ {
        self.problems.iter().filter(move |p| p.target() == target)
    }

    fn config_backup(&self) -> PathBuf {
        self.container.dir().join(CONFIG_BACKUP)
    }

    /// The seccomp profile a fix writes (path and text), when a systemd container needs one.
    fn seccomp_profile(&self) -> anyhow::Result<Option<(PathBuf, String)>> {
        systemd::new_profile(&self.of(Target::Config).collect::<Vec<_>>())
    }
}

/// `PROFILE (the lines of BASE plus the denials below) and set lxc.seccomp.profile = PROFILE`.
fn seccomp_note(survey: &Survey, path: &Path) -> String {
    let base = survey.problems.iter().find_map(|p| match p {
        Problem::SystemdSeccomp { profile, .. } => Some(profile.clone()),
        _ => None,
    });
    let from = match base.flatten() {
        Some(base) => format!("the lines of {} plus the denials below", base.display()),
        None => "a denylist of the denials below".to_string(),
    };
    format!(
        "{} ({from}) and set lxc.seccomp.profile = {}",
        path.display(),
        path.display()
    )
}

fn check(survey: &Survey, cfg: &FixConfig, say: &dyn Fn(&str)) -> anyhow::Result<()> {
    if survey.problems.is_empty() {
        say("checkpointable, no problems found");
        return Ok(());
    }
    for problem in &survey.problems {
        say(&problem.to_string());
    }
    let count = survey.problems.len();
    let flag = match &cfg.lxcpath {
        Some(path) => format!(" -P {}", path.display()),
        None => String::new(),
    };
    anyhow::bail!(
        "{} is not checkpointable: {count} problem{} (run {TOOL}{flag} {} to fix them)",
        cfg.name,
        if count == 1 { "" } else { "s" },
        cfg.name
    )
}

fn dry_run(survey: &Survey, say: &dyn Fn(&str)) {
    if survey.problems.is_empty() {
        say("already checkpointable, nothing would change");
        return;
    }
    if survey.of(Target::Config).next().is_some() && !survey.config_backup().exists() {
        say(&format!(
            "would save the original config as {}",
            survey.config_backup().display()
        ));
    }
    if let Some(inittab) = survey
        .inittab
        .as_ref()
        .filter(|_| survey.of(Target::Inittab).next().is_some())
    {
        let backup = inittab.path.with_file_name(inittab::BACKUP);
        if std::fs::symlink_metadata(&backup).is_err() {
            say(&format!(
                "would save the original inittab as {}",
                backup.display()
            ));
        }
    }
    match survey.seccomp_profile() {
        Ok(Some((path, _))) => say(&format!("would write {}", seccomp_note(survey, &path))),
        Ok(None) => {}
        Err(err) => say(&format!("a fix would fail: {err:#}")),
    }
    for problem in &survey.problems {
        say(&problem.action(false));
    }
    if survey.container.is_running() {
        say("note: the container is running: stop it before fixing it");
    }
}

fn fix(survey: &Survey, say: &dyn Fn(&str)) -> anyhow::Result<()> {
    let container = &survey.container;
    if survey.problems.is_empty() {
        say("already checkpointable, nothing changed");
        return Ok(());
    }
    if container.is_running() {
        anyhow::bail!(
            "container {name} is running: stop it first (lxc-stop -n {name} -P {}), then run {TOOL} again",
            container.lxcpath.display(),
            name = container.name
        );
    }
    fix_config(survey, say)?;
    fix_inittab(survey, say)?;
    if let Some(dev) = &survey.dev {
        for problem in survey.of(Target::Dev) {
            devtty::apply(dev, problem)?;
            say(&problem.action(true));
        }
    }
    let count = survey.problems.len();
    say(&format!(
        "fixed {count} problem{}, checkpointable now",
        if count == 1 { "" } else { "s" }
    ));
    Ok(())
}

/// Applies every config fix in memory, saves the original once as `config.ckpt-orig`, then writes
/// the new config atomically; the change lines are printed only once it is written.
fn fix_config(survey: &Survey, say: &dyn Fn(&str)) -> anyhow::Result<()> {
    if survey.of(Target::Config).next().is_none() {
        return Ok(());
    }
    let path = survey.container.config_path();
    let mut config = survey.config.clone();
    let mut marked = false;
    survey
        .of(Target::Config)
        .for_each(|p| settings::apply(&mut config, p, &mut marked));
    // The profile first: the config never names a file that is not there yet.
    let profile = survey.seccomp_profile()?;
    if let Some((path, _)) = &profile {
        systemd::point_config(&mut config, path, &mut marked);
    }
    let backup = survey.config_backup();
    if atomic::create_file(
        &backup,
        survey.config.to_string().as_bytes(),
        perms_of(&path)?,
    )
    .with_context(|| format!("cannot save {}", backup.display()))?
    {
        say(&format!(
            "saved the original config as {}",
            backup.display()
        ));
    }
    if let Some((profile_path, text)) = &profile {
        systemd::write_profile(profile_path, text)?;
    }
    config.save(&path)?;
    if let Some((profile_path, _)) = &profile {
        say(&format!("wrote {}", seccomp_note(survey, profile_path)));
    }
    survey.of(Target::Config).for_each(|p| say(&p.action(true)));
    Ok(())
}

/// Comments out the inittab lines, after saving the original once as `inittab.ckpt-orig`.
fn fix_inittab(survey: &Survey, say: &dyn Fn(&str)) -> anyhow::Result<()> {
    let Some(inittab) = &survey.inittab else {
        return Ok(());
    };
    let lines: Vec<usize> = survey
        .of(Target::Inittab)
        .filter_map(|p| match p {
            Problem::InittabTty { line, .. } => Some(*line),
            _ => None,
        })
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    if inittab::apply(inittab, &lines)? {
        let backup = inittab.path.with_file_name(inittab::BACKUP);
        say(&format!(
            "saved the original inittab as {}",
            backup.display()
        ));
    }
    survey
        .of(Target::Inittab)
        .for_each(|p| say(&p.action(true)));
    Ok(())
}

fn perms_of(path: &Path) -> anyhow::Result<Perms> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(Perms {
        mode: meta.mode() & 0o7777,
        owner: Some((meta.uid(), meta.gid())),
    })
}

#[cfg(test)]
mod tests;
