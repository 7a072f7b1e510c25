//! The model of an LXC container config file: `key = value` lines kept with their comments, blank
//! lines and order, so that an edit changes only the lines it means to and the rest stays byte-exact.

use std::fmt;
use std::path::Path;

use anyhow::Context;

use super::atomic;

/// An LXC config file, line by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    lines: Vec<Line>,
    /// Whether the text ended with a newline (kept as it was; appended lines always end with one).
    trailing_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A `key = value` line. `raw` is the original text, `None` once the value was edited.
    Entry {
        key: String,
        value: String,
        raw: Option<String>,
    },
    /// A comment, a blank line, or anything LXC would not read as a setting.
    Other(String),
}

/// One `key = value` setting as LXC reads it (value trimmed, one pair of quotes removed), and its
/// 1-based line number in the file as loaded or edited so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<'a> {
    pub line: usize,
    pub key: &'a str,
    pub value: &'a str,
}

impl Config {
    /// Parses config text the way LXC does: `#` starts a comment only at the start of a line,
    /// the key is what comes before the first `=`, both sides are trimmed, and a value wrapped
    /// in one pair of matching quotes loses them.
    pub fn parse(text: &str) -> Config {
        let mut pieces: Vec<&str> = text.split('\n').collect();
        let trailing_newline = text.ends_with('\n');
        if pieces.last() == Some(&"") {
            pieces.pop();
        }
        Config {
            lines: pieces.into_iter().map(parse_line).collect(),
            trailing_newline,
        }
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read container config {}", path.display()))?;
        Ok(Config::parse(&text))
    }

    /// Writes the config to `path` atomically (a temp file in the same directory renamed over it),
    /// keeping the mode and owner of the file it replaces.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        atomic::replace_file(path, self.to_string().as_bytes())
            .with_context(|| format!("cannot write container config {}", path.display()))
    }

    /// Every setting in file order.
    pub fn settings(&self) -> impl Iterator<Item = Setting<'_>> + '_ {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| match line {
                Line::Entry { key, value, .. } => Some(Setting {
                    line: i + 1,
                    key,
                    value,
                }),
                Line::Other(_) => None,
            })
    }

    /// The last setting of `key`: the one LXC uses for a single-valued key.
    pub fn last(&self, key: &str) -> Option<Setting<'_>> {
        self.settings().filter(|s| s.key == key).last()
    }

    /// The value LXC uses for the single-valued `key` (its last setting).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.last(key).map(|s| s.value)
    }

    /// Every value of `key` in file order (for list keys such as `lxc.mount.entry`).
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.settings()
            .filter(|s| s.key == key)
            .map(|s| s.value)
            .collect()
    }

    /// Sets the single-valued `key`: edits its last setting in place and removes earlier ones, or
    /// appends it when absent. Returns whether anything changed.
    pub fn set(&mut self, key: &str, value: &str) -> bool {
        let Some(last) = self.last(key).map(|s| s.line - 1) else {
            self.append(key, value);
            return true;
        };
        let mut changed = false;
        if let Line::Entry {
            value: old, raw, ..
        } = &mut self.lines[last]
        {
            if old != value {
                *old = value.to_string();
                *raw = None;
                changed = true;
            }
        }
        let mut index = 0;
        self.lines.retain(|line| {
            let keep = index == last || !matches!(line, Line::Entry { key: k, .. } if k == key);
            index += 1;
            changed |= !keep;
            keep
        });
        changed
    }

    /// Appends `key = value` at the end.
    pub fn append(&mut self, key: &str, value: &str) {
        self.lines.push(Line::Entry {
            key: key.to_string(),
            value: value.to_string(),
            raw: None,
        });
        self.trailing_newline = true;
    }

    /// Appends a comment line (`# ` is added in front of `text`).
    pub fn append_comment(&mut self, text: &str) {
        self.lines.push(Line::Other(format!("# {text}")));
        self.trailing_newline = true;
    }

    /// Whether the config has the comment line `# text` (as [`Config::append_comment`] writes it).
    pub fn has_comment(&self, text: &str) -> bool {
        self.lines
            .iter()
            .any(|line| matches!(line, Line::Other(raw) if raw.strip_prefix("# ") == Some(text)))
    }

    /// Removes every setting for which `remove` returns true; returns how many were removed.
    pub fn remove_matching(&mut self, mut remove: impl FnMut(&Setting<'_>) -> bool) -> usize {
        let before = self.lines.len();
        let mut number = 0;
        self.lines.retain(|line| {
            number += 1;
            match line {
                Line::Entry { key, value, .. } => !remove(&Setting {
                    line: number,
                    key,
                    value,
                }),
                Line::Other(_) => true,
            }
        });
        before - self.lines.len()
    }

    /// Removes every setting in the key namespace `prefix`: the key itself and `prefix.*`
    /// (`lxc.apparmor` removes `lxc.apparmor.profile`, never `lxc.apparmorx`).
    pub fn remove_key_prefix(&mut self, prefix: &str) -> usize {
        self.remove_matching(|s| in_namespace(s.key, prefix))
    }

    /// Rewrites every value with `edit`, which returns the new value or `None` to keep it. Returns
    /// `(key, old value, new value)` for each setting changed.
    pub(crate) fn edit_values(
        &mut self,
        mut edit: impl FnMut(&str, &str) -> Option<String>,
    ) -> Vec<(String, String, String)> {
        let mut changed = Vec::new();
        for line in &mut self.lines {
            if let Line::Entry { key, value, raw } = line {
                if let Some(new) = edit(key, value) {
                    if new != *value {
                        changed.push((key.clone(), value.clone(), new.clone()));
                        *value = new;
                        *raw = None;
                    }
                }
            }
        }
        changed
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match line {
                Line::Entry { raw: Some(raw), .. } | Line::Other(raw) => f.write_str(raw)?,
                Line::Entry {
                    key,
                    value,
                    raw: None,
                } if value.is_empty() => write!(f, "{key} =")?,
                Line::Entry {
                    key,
                    value,
                    raw: None,
                } => write!(f, "{key} = {value}")?,
            }
        }
        if self.trailing_newline && !self.lines.is_empty() {
            f.write_str("\n")?;
        }
        Ok(())
    }
}

/// True when `key` is `namespace` or below it (`lxc.apparmor.profile` is in `lxc.apparmor`).
pub fn in_namespace(key: &str, namespace: &str) -> bool {
    key.strip_prefix(namespace)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

fn parse_line(text: &str) -> Line {
    let other = || Line::Other(text.to_string());
    let trimmed = text.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return other();
    }
    let Some((key, value)) = trimmed.split_once('=') else {
        return other();
    };
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return other();
    }
    Line::Entry {
        key: key.to_string(),
        value: unquote(value.trim()).to_string(),
        raw: Some(text.to_string()),
    }
}

/// Removes one pair of matching quotes around a value, as LXC does.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
