//! Whether a stream can be restored on this host, decided from its manifest alone, before the
//! data arrives: architecture, CRIU versions, CPU features.

use crate::host::{cpu_flags, criu_version, uname, version_at_least};
use ckpt_stream::format::Manifest;

/// Refuses a stream this host cannot restore, with the reason and what to do.
pub fn check(manifest: &Manifest) -> anyhow::Result<()> {
    check_against(
        manifest,
        &uname().arch,
        criu_version().as_deref(),
        &cpu_flags(),
    )
}

/// [`check`] against given host facts (testable without this host).
pub fn check_against(
    manifest: &Manifest,
    arch: &str,
    criu: Option<&str>,
    flags: &[String],
) -> anyhow::Result<()> {
    if !manifest.include.images {
        anyhow::bail!(
            "the stream of {} holds no CRIU images (a stopped container): unpack it with ckpt-unpack -C DIR instead",
            manifest.name
        );
    }
    if manifest.arch != arch {
        anyhow::bail!("the stream comes from an {} host and this host is {arch}: CRIU cannot restore across architectures", manifest.arch);
    }
    let Some(local) = criu else {
        anyhow::bail!(
            "criu is not installed here: install CRIU >= {} (make deps)",
            crate::criu::MIN_VERSION
        );
    };
    if !version_at_least(local, crate::criu::MIN_VERSION) {
        anyhow::bail!(
            "CRIU {local} here is older than {}: install a newer CRIU (make deps)",
            crate::criu::MIN_VERSION
        );
    }
    if let Some(source) = &manifest.criu {
        if !version_at_least(local, source) {
            anyhow::bail!("the images were written by CRIU {source}, newer than CRIU {local} here: install CRIU >= {source}");
        }
    }
    let missing: Vec<&str> = manifest
        .cpu_flags
        .iter()
        .filter(|f| !flags.contains(f))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(6).copied().collect();
        anyhow::bail!(
            "this CPU lacks {} feature(s) the source CPU has ({}{}): the restored programs could crash; restore on a compatible CPU",
            missing.len(),
            shown.join(" "),
            if missing.len() > shown.len() { " ..." } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckpt_stream::format::{Include, RootfsMode};

    fn manifest() -> Manifest {
        Manifest {
            format: "ckpt".into(),
            version: 1,
            name: "u1".into(),
            lxcpath: "/var/lib/lxc".into(),
            host: "h".into(),
            kernel: "6.18".into(),
            arch: "x86_64".into(),
            criu: Some("4.2.1".into()),
            lxc: None,
            ckpt: "0.1.0".into(),
            created: "2026-01-01T00:00:00Z".into(),
            include: Include {
                rootfs: RootfsMode::Full,
                images: true,
            },
            cpu_flags: vec!["sse2".into(), "avx2".into()],
            await_copy: false,
            memory: Default::default(),
        }
    }

    #[test]
    fn compatible_host_passes() {
        let flags = vec!["avx2".to_string(), "sse2".to_string(), "extra".to_string()];
        check_against(&manifest(), "x86_64", Some("4.2.1"), &flags).unwrap();
    }

    #[test]
    fn each_incompatibility_is_named() {
        let flags = vec!["sse2".to_string(), "avx2".to_string()];
        let err = |m: &Manifest, arch: &str, criu: Option<&str>, flags: &[String]| {
            check_against(m, arch, criu, flags).unwrap_err().to_string()
        };
        assert!(err(&manifest(), "aarch64", Some("4.2.1"), &flags).contains("architectures"));
        assert!(err(&manifest(), "x86_64", None, &flags).contains("not installed"));
        assert!(err(&manifest(), "x86_64", Some("4.1.1"), &flags).contains("older than 4.2"));
        let mut newer = manifest();
        newer.criu = Some("4.3".into());
        assert!(err(&newer, "x86_64", Some("4.2.1"), &flags).contains("newer than CRIU 4.2.1"));
        assert!(err(&manifest(), "x86_64", Some("4.2.1"), &flags[..1]).contains("avx2"));
        let mut stopped = manifest();
        stopped.include.images = false;
        assert!(err(&stopped, "x86_64", Some("4.2.1"), &flags).contains("no CRIU images"));
    }
}
