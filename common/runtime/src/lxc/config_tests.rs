//! Unit tests of the config model: parsing as LXC does, minimal edits, atomic save.

use super::*;

const BUSYBOX: &str = "\
# Template used to create this container: /usr/share/lxc/templates/lxc-busybox

#lxc.include = /usr/share/lxc/config/nesting.conf
lxc.net.0.type = veth
lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 1
lxc.rootfs.path = dir:/var/lib/lxc/u1/rootfs
lxc.uts.name = \"u1\"
lxc.tty.max = 5
lxc.mount.entry = /lib lib none ro,bind 0 0
lxc.mount.entry = /usr/lib usr/lib none ro,bind 0 0
";

#[test]
fn round_trip_is_byte_exact() {
    for text in [
        BUSYBOX,
        "",
        "\n",
        "a = b",
        "  weird line without equals\n\tlxc.x=y  \r\n",
        "= v\n",
    ] {
        assert_eq!(Config::parse(text).to_string(), text);
    }
}

#[test]
fn parses_like_lxc() {
    let config = Config::parse(BUSYBOX);
    assert_eq!(config.get("lxc.uts.name"), Some("u1"));
    assert_eq!(
        config.get("lxc.include"),
        None,
        "a commented line is no setting"
    );
    assert_eq!(config.get("lxc.tty.max"), Some("5"));
    assert_eq!(
        config.get_all("lxc.mount.entry"),
        [
            "/lib lib none ro,bind 0 0",
            "/usr/lib usr/lib none ro,bind 0 0"
        ]
    );
    let last = config.last("lxc.tty.max").unwrap();
    assert_eq!((last.line, last.key, last.value), (9, "lxc.tty.max", "5"));
    let spaced = Config::parse("  lxc.a=1\nlxc.a   =   '2'  \nlxc.b = it's = ok\n");
    assert_eq!(spaced.get_all("lxc.a"), ["1", "2"]);
    assert_eq!(spaced.get("lxc.a"), Some("2"), "the last setting wins");
    assert_eq!(spaced.get("lxc.b"), Some("it's = ok"));
}

#[test]
fn set_edits_in_place_or_appends() {
    let mut config = Config::parse(BUSYBOX);
    assert!(config.set("lxc.tty.max", "0"));
    assert!(
        !config.set("lxc.tty.max", "0"),
        "setting the same value again changes nothing"
    );
    assert!(config.set("lxc.console.path", "none"));
    let want = BUSYBOX.replace("lxc.tty.max = 5", "lxc.tty.max = 0") + "lxc.console.path = none\n";
    assert_eq!(config.to_string(), want);
}

#[test]
fn set_removes_earlier_duplicates() {
    let mut config = Config::parse("lxc.tty.max = 1\n# c\nlxc.tty.max = 2\n");
    assert!(config.set("lxc.tty.max", "2"));
    assert_eq!(config.to_string(), "# c\nlxc.tty.max = 2\n");
}

#[test]
fn append_after_text_without_final_newline() {
    let mut config = Config::parse("lxc.a = 1");
    config.append_comment("added");
    config.append("lxc.b", "2");
    assert_eq!(config.to_string(), "lxc.a = 1\n# added\nlxc.b = 2\n");
    let mut empty = Config::parse("");
    empty.append("lxc.b", "2");
    assert_eq!(empty.to_string(), "lxc.b = 2\n");
}

#[test]
fn remove_by_namespace_and_predicate() {
    let mut config = Config::parse(BUSYBOX);
    assert_eq!(config.remove_key_prefix("lxc.apparmor"), 2);
    assert_eq!(config.remove_key_prefix("lxc.apparmor"), 0);
    assert!(!config.to_string().contains("lxc.apparmor"));
    assert_eq!(
        config.remove_matching(|s| s.key == "lxc.mount.entry" && s.value.starts_with("/usr")),
        1
    );
    assert_eq!(
        config.get_all("lxc.mount.entry"),
        ["/lib lib none ro,bind 0 0"]
    );
    assert!(in_namespace("lxc.apparmor", "lxc.apparmor"));
    assert!(!in_namespace("lxc.apparmorx", "lxc.apparmor"));
    assert!(!in_namespace("lxc.tty.max", "lxc.tty.max.x"));
}

#[test]
fn save_is_atomic_and_keeps_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, BUSYBOX).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut config = Config::load(&path).unwrap();
    config.set("lxc.tty.max", "0");
    config.save(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        BUSYBOX.replace("= 5", "= 0")
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config"], "no temp file is left behind");
}

#[test]
fn load_error_names_the_file() {
    let err = Config::load(Path::new("/nonexistent/ckpt/config")).unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot read container config /nonexistent/ckpt/config"),
        "{err:#}"
    );
}
