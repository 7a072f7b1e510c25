//! The config side of lxc-fixtty: the seed's tty and console settings in today's LXC keys, the
//! /dev/console deny rule, AppArmor lines on a kernel without AppArmor, legacy keys. A required
//! line counts only when nothing after it (an `lxc.include`, an allow rule) may undo it.

use std::path::Path;

use crate::lxc::{in_namespace, Config, Setting};

use super::problem::{Found, Problem, CONSOLE_DENY};
use super::Host;

/// Single-valued settings CRIU needs: no LXC ttys, no console pty.
const REQUIRED: [(&str, &str); 2] = [("lxc.tty.max", "0"), ("lxc.console.path", "none")];

/// Pre-3.0 keys LXC now refuses, and what replaced them (which lxc-fixtty sets anyway).
const LEGACY: [(&str, &str); 2] = [
    ("lxc.tty", "lxc.tty.max"),
    ("lxc.console", "lxc.console.path"),
];

/// Comment put before the first line lxc-fixtty appends to a config.
const MARKER: &str =
    "lxc-fixtty: settings that let CRIU checkpoint this container (see lxc-fixtty(1))";

/// Include files nested deeper than this are not read (LXC itself refuses loops).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Finds the config's problems, in this order: legacy keys, required settings, the console deny
/// rule, AppArmor.
pub(super) fn survey(config: &Config, host: &Host, problems: &mut Vec<Problem>) {
    for s in config.settings() {
        if let Some(&(_, replaced_by)) = LEGACY.iter().find(|(key, _)| *key == s.key) {
            problems.push(Problem::LegacyKey {
                line: s.line,
                key: s.key.into(),
                value: s.value.into(),
                replaced_by,
            });
        }
    }
    for (key, want) in REQUIRED {
        let found = match config.last(key) {
            None => Some(Found::Missing),
            Some(s) if !satisfies(key, s.value, want) => Some(Found::Wrong {
                value: s.value.into(),
                line: s.line,
            }),
            Some(s) => overridden(config, s.line, |later| later.key == "lxc.include"),
        };
        problems.extend(found.map(|found| Problem::Setting { key, want, found }));
    }
    let deny = host.devices.devices_deny_key();
    let allow = host.devices.devices_allow_key();
    let found = match config
        .settings()
        .filter(|s| s.key == deny && denies_console(s.value))
        .last()
    {
        None => Some(Found::Missing),
        Some(s) => overridden(config, s.line, |later| match later.key {
            "lxc.include" => true,
            key if key == allow => allows_console(later.value),
            key if key == deny => later.value.is_empty(), // an empty deny clears the rules
            _ => false,
        }),
    };
    problems.extend(found.map(|found| Problem::ConsoleAllowed { key: deny, found }));
    if !host.apparmor {
        apparmor(config, problems);
    }
}

/// Whether `value` gives `key` the wanted effect (an empty `lxc.tty.max` means 0).
fn satisfies(key: &str, value: &str, want: &str) -> bool {
    value == want || (key == "lxc.tty.max" && value.is_empty())
}

/// `Found::Overridden` when a setting after `line` matches `undoes`.
fn overridden(
    config: &Config,
    line: usize,
    undoes: impl Fn(&Setting<'_>) -> bool,
) -> Option<Found> {
    let later = config
        .settings()
        .filter(|s| s.line > line && undoes(s))
        .last()?;
    Some(Found::Overridden {
        line,
        by_line: later.line,
        by: format!("{} = {}", later.key, later.value),
    })
}

fn apparmor(config: &Config, problems: &mut Vec<Problem>) {
    // An empty value clears the setting: harmless, and how an included profile is cleared.
    for s in config
        .settings()
        .filter(|s| in_namespace(s.key, "lxc.apparmor") && !s.value.is_empty())
    {
        problems.push(Problem::AppArmorKey {
            line: s.line,
            key: s.key.into(),
            value: s.value.into(),
        });
    }
    let Some(include) = config
        .settings()
        .filter(|s| s.key == "lxc.include" && include_sets_apparmor(Path::new(s.value), 0))
        .last()
    else {
        return;
    };
    let cleared = config
        .settings()
        .any(|s| s.line > include.line && s.key == "lxc.apparmor.profile" && s.value.is_empty());
    if !cleared {
        problems.push(Problem::AppArmorInclude {
            line: include.line,
            include: include.value.into(),
        });
    }
}

/// Whether the include file (or every `*.conf` of an include dir) sets an AppArmor profile.
/// Unreadable includes count as not setting one: LXC itself fails on them.
fn include_sets_apparmor(path: &Path, depth: usize) -> bool {
    if depth > MAX_INCLUDE_DEPTH {
        return false;
    }
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return false;
        };
        return entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "conf"))
            .any(|p| include_sets_apparmor(&p, depth + 1));
    }
    let Ok(config) = Config::load(path) else {
        return false;
    };
    let sets = config.settings().any(|s| match s.key {
        "lxc.apparmor.profile" => !s.value.is_empty(),
        "lxc.include" => include_sets_apparmor(Path::new(s.value), depth + 1),
        _ => false,
    });
    sets
}

/// Whether a deny rule covers /dev/console: `a`, or `c 5:1` with read and write access.
fn denies_console(rule: &str) -> bool {
    let parts: Vec<&str> = rule.split_whitespace().collect();
    match parts.as_slice() {
        ["a"] => true,
        ["c", "5:1", access] => access.contains('r') && access.contains('w'),
        _ => false,
    }
}

/// Whether an allow rule may give back /dev/console: `a`, or type `a`/`c` with a device matching
/// 5:1 (wildcards included) and read or write access.
fn allows_console(rule: &str) -> bool {
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let matches = |want: &str, got: &str| got == "*" || got == want;
    match parts.as_slice() {
        ["a"] => true,
        [kind, device, access] if matches!(*kind, "a" | "c") => {
            let (major, minor) = device.split_once(':').unwrap_or((device, "*"));
            matches("5", major)
                && matches("1", minor)
                && (access.contains('r') || access.contains('w'))
        }
        _ => false,
    }
}

/// Applies a config problem's fix to `config`. `marked` tracks whether this run already put the
/// lxc-fixtty comment before the lines it appends.
pub(super) fn apply(config: &mut Config, problem: &Problem, marked: &mut bool) {
    match problem {
        Problem::Setting { key, want, found } => match found {
            // In place when nothing later may override it, else last.
            Found::Wrong { .. } if !is_overridden(config, key) => {
                config.set(key, want);
            }
            _ => {
                config.remove_matching(|s| s.key == *key);
                append(config, key, want, marked);
            }
        },
        Problem::ConsoleAllowed { key, .. } => {
            config.remove_matching(|s| s.key == *key && is_console_rule(s.value));
            append(config, key, CONSOLE_DENY, marked);
        }
        Problem::AppArmorKey { key, value, .. } | Problem::LegacyKey { key, value, .. } => {
            config.remove_matching(|s| s.key == key.as_str() && s.value == value.as_str());
        }
        Problem::AppArmorInclude { .. } => append(config, "lxc.apparmor.profile", "", marked),
        // The profile file and its config line: fix_config, through the systemd module.
        Problem::SystemdSeccomp { .. } => {}
        Problem::TtyNode { .. } | Problem::TtyMissing { .. } | Problem::InittabTty { .. } => {}
    }
}

fn is_overridden(config: &Config, key: &str) -> bool {
    config.last(key).is_some_and(|s| {
        config
            .settings()
            .any(|later| later.line > s.line && later.key == "lxc.include")
    })
}

/// `c 5:1 ...`: a rule lxc-fixtty may replace by its own.
fn is_console_rule(rule: &str) -> bool {
    let parts: Vec<&str> = rule.split_whitespace().collect();
    matches!(parts.as_slice(), ["c", "5:1", _])
}

pub(super) fn append(config: &mut Config, key: &str, value: &str, marked: &mut bool) {
    // One comment, even when a later run appends more.
    if !*marked && !config.has_comment(MARKER) {
        config.append_comment(MARKER);
        *marked = true;
    }
    config.append(key, value);
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
