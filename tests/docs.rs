//! Keeps the docs from drifting: every flag a tool's --help shows is in its man page, and the
//! README shows the commands it promises.

mod util;

use util::{Dir, TOOLS};

fn long_flags(help: &str) -> Vec<String> {
    let mut flags: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn every_flag_in_help_is_in_the_man_page() {
    let t = Dir::new("docs");
    for tool in TOOLS {
        let help = t.cmd(tool).arg("--help").ok().stdout_str();
        let page = std::fs::read_to_string(format!("{}/man/{tool}.1", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("man/{tool}.1: {e}"));
        let page = page.replace("\\-", "-");
        for flag in long_flags(&help) {
            assert!(
                page.contains(&flag),
                "man/{tool}.1 does not document {flag} (from --help)"
            );
        }
        assert!(
            page.contains("EXIT STATUS") && page.contains(".SH EXAMPLES"),
            "{tool}.1 lacks sections"
        );
    }
    assert!(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/man/ckpt-stream.5")).is_file()
    );
}

#[test]
fn readme_shows_the_two_commands_and_the_pipeline() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for needle in [
        "make demo",
        "make test",
        "ckpt-dump u1 | ssh",
        "ckpt-unpack -C",
        "## Install on each host",
        "make deb",
        "make install",
    ] {
        assert!(readme.contains(needle), "README.md lacks {needle:?}");
    }
}
