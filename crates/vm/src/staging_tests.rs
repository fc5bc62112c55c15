//! Tests of the staging tree: path resolution inside the root, whiteouts, replacement, links.
use super::*;
use std::collections::HashSet;

const M: EntryMeta = EntryMeta {
    uid: 0,
    gid: 0,
    mtime: 100,
};

fn staging() -> (tempfile::TempDir, Staging) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let s = Staging::new(root, "test-image".into());
    (dir, s)
}

fn file(s: &mut Staging, p: &str, body: &str) -> String {
    s.add_file(Path::new(p), 0o644, M, &mut body.as_bytes())
        .unwrap()
}

#[test]
fn absolute_symlinks_in_parents_stay_inside_the_root() {
    let (dir, mut s) = staging();
    s.add_dir(Path::new("run"), 0o755, M).unwrap();
    s.add_dir(Path::new("var"), 0o755, M).unwrap();
    s.add_symlink(Path::new("var/run"), Path::new("/run"), M)
        .unwrap();
    // A link to the host's /etc must not let a layer write there.
    s.add_symlink(Path::new("escape"), Path::new("/../../etc"), M)
        .unwrap();
    assert_eq!(file(&mut s, "var/run/x.pid", "1"), "run/x.pid");
    assert_eq!(file(&mut s, "escape/passwd", "x"), "etc/passwd");
    assert!(dir.path().join("root/run/x.pid").is_file());
    assert!(dir.path().join("root/etc/passwd").is_file());
    assert!(!dir.path().join("etc").exists());
}

#[test]
fn relative_symlink_chains_resolve_and_loops_are_errors() {
    let (_dir, mut s) = staging();
    s.add_dir(Path::new("usr/lib"), 0o755, M).unwrap();
    s.add_symlink(Path::new("lib"), Path::new("usr/lib"), M)
        .unwrap();
    s.add_symlink(Path::new("lib64"), Path::new("./lib"), M)
        .unwrap();
    assert_eq!(file(&mut s, "lib64/ld.so", "elf"), "usr/lib/ld.so");
    s.add_symlink(Path::new("a"), Path::new("b"), M).unwrap();
    s.add_symlink(Path::new("b"), Path::new("a"), M).unwrap();
    let e = s
        .add_file(Path::new("a/x"), 0o644, M, &mut "".as_bytes())
        .unwrap_err();
    assert!(e.to_string().contains("too many symlinks"), "{e}");
}

#[test]
fn dot_dot_out_of_the_root_is_refused() {
    let (_dir, mut s) = staging();
    let e = s
        .add_file(Path::new("../evil"), 0o644, M, &mut "".as_bytes())
        .unwrap_err();
    assert!(e.to_string().contains("climbs out of the root"), "{e}");
    // Inside the tree, `..` is fine.
    assert_eq!(file(&mut s, "a/../b", "x"), "b");
}

#[test]
fn missing_parents_are_created_as_root_owned_dirs() {
    let (_dir, mut s) = staging();
    file(&mut s, "opt/app/bin/run", "x");
    for k in ["opt", "opt/app", "opt/app/bin"] {
        assert_eq!(s.entries()[k].uid, 0, "{k}");
    }
}

#[test]
fn whiteouts_remove_entries_and_their_records() {
    let (dir, mut s) = staging();
    file(&mut s, "etc/a", "1");
    file(&mut s, "etc/b", "2");
    s.add_special(
        Path::new("etc/dev"),
        SpecialNode {
            kind: SpecialKind::Char,
            mode: 0o600,
            major: 1,
            minor: 3,
        },
        M,
    )
    .unwrap();
    s.whiteout(Path::new("etc/a")).unwrap();
    assert!(!dir.path().join("root/etc/a").exists());
    assert!(!s.entries().contains_key("etc/a"));
    // An opaque directory keeps only what the current layer wrote.
    let keep: HashSet<String> = ["etc/new".to_string()].into();
    file(&mut s, "etc/new", "3");
    s.opaque(Path::new("etc"), &keep).unwrap();
    assert!(dir.path().join("root/etc/new").exists());
    assert!(!dir.path().join("root/etc/b").exists());
    assert!(s.special_nodes().is_empty());
    assert!(s.entries().contains_key("etc"));
}

#[test]
fn a_later_entry_replaces_an_earlier_one_of_another_kind() {
    let (dir, mut s) = staging();
    file(&mut s, "x/y", "1");
    // A file over a directory replaces the whole directory.
    file(&mut s, "x", "now a file");
    assert!(!s.entries().contains_key("x/y"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("root/x")).unwrap(),
        "now a file"
    );
    // A directory over a directory merges.
    file(&mut s, "d/one", "1");
    s.add_dir(Path::new("d"), 0o700, M).unwrap();
    assert!(dir.path().join("root/d/one").exists());
}

#[test]
fn hard_links_need_an_existing_target() {
    let (dir, mut s) = staging();
    file(&mut s, "bin/busybox", "bb");
    s.add_hardlink(Path::new("bin/sh"), Path::new("bin/busybox"))
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(dir.path().join("root/bin/busybox")).unwrap();
    let b = std::fs::metadata(dir.path().join("root/bin/sh")).unwrap();
    assert_eq!(a.ino(), b.ino());
    let e = s
        .add_hardlink(Path::new("bin/x"), Path::new("bin/missing"))
        .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn times_are_settled_from_the_records() {
    let (dir, mut s) = staging();
    file(&mut s, "a/b", "x");
    s.settle_times(7).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(dir.path().join("root/a/b"))
            .unwrap()
            .mtime(),
        100
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("root/a"))
            .unwrap()
            .mtime(),
        100
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("root")).unwrap().mtime(),
        7
    );
}
