//! Root filesystems from real image formats with the real e2fsprogs: byte-identical builds,
//! what ends up inside (checked with debugfs), the cache, and clear errors for broken images.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::*;
use std::path::Path;
use tabbify_vm::{AppCommand, ImageSource, RootfsCache, VmError, build_rootfs};

fn sha_file(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

fn cache(dir: &Path) -> RootfsCache {
    RootfsCache::new(dir, guest_init())
}

/// No leftovers of a failed build in the cache directory.
fn assert_cache_clean(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.is_empty(),
        "cache not clean after a failed build: {names:?}"
    );
}

#[test]
fn the_same_docker_archive_gives_a_byte_identical_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("hello.tar");
    docker_archive(&archive, &hello_layers(), &hello_config());
    let image = ImageSource::detect(&archive).unwrap();
    assert_eq!(image, ImageSource::DockerArchive(archive.clone()));
    let app = AppCommand::default();

    // Two builds into two caches: nothing is shared between them but the input.
    let a = build_rootfs(&image, &app, &cache(&dir.path().join("c1"))).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a different clock second
    let b = build_rootfs(&image, &app, &cache(&dir.path().join("c2"))).unwrap();
    assert!(!a.from_cache && !b.from_cache);
    assert_eq!(a.digest, b.digest);
    assert_eq!(sha_file(&a.path), sha_file(&b.path), "rootfs images differ");

    // The same input in the same cache is a hit, and the file is untouched.
    let before = sha_file(&a.path);
    let again = build_rootfs(&image, &app, &cache(&dir.path().join("c1"))).unwrap();
    assert!(again.from_cache);
    assert_eq!(again.path, a.path);
    assert_eq!(sha_file(&again.path), before);

    // A different command is a different rootfs.
    let other = AppCommand {
        command: vec!["/bin/hello-http".into(), "--other".into()],
        ..Default::default()
    };
    let c = build_rootfs(&image, &other, &cache(&dir.path().join("c1"))).unwrap();
    assert_ne!(c.digest, a.digest);
}

#[test]
fn the_rootfs_holds_the_image_init_and_app_description() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("hello.tar");
    let mut layers = hello_layers();
    layers.push(layer_tar(&[
        Item::File {
            path: "srv/data.txt",
            mode: 0o600,
            uid: 1000,
            data: b"owned by web".to_vec(),
        },
        // Modes a builder without root could not stage as they are.
        Item::DirMode("locked/", 0o555),
        Item::File {
            path: "locked/secret",
            mode: 0o000,
            uid: 0,
            data: b"unreadable".to_vec(),
        },
        Item::File {
            path: "bin/su",
            mode: 0o4755,
            uid: 0,
            data: b"setuid".to_vec(),
        },
    ]));
    // A read-only directory that a later layer still writes into.
    layers.push(layer_tar(&[Item::File {
        path: "locked/late",
        mode: 0o644,
        uid: 0,
        data: b"late".to_vec(),
    }]));
    docker_archive(&archive, &layers, &hello_config());
    let app = AppCommand {
        env: [("GREETING".to_string(), "hi".to_string())].into(),
        user: Some("web".into()),
        ..Default::default()
    };
    let art = build_rootfs(
        &ImageSource::detect(&archive).unwrap(),
        &app,
        &cache(dir.path()),
    )
    .unwrap();

    // What init will run: the image's entrypoint and env, the app's additions, the user resolved
    // through the image's /etc/passwd.
    assert_eq!(art.app.argv, vec!["/bin/hello-http"]);
    assert_eq!(art.app.env, vec!["PATH=/bin", "PORT=8080", "GREETING=hi"]);
    assert_eq!(
        (art.app.workdir.as_str(), art.app.uid, art.app.gid),
        ("/srv", 1000, 1000)
    );

    let stat = debugfs(&art.path, "stat /bin/hello-http");
    assert!(stat.contains("User:     0   Group:     0"), "{stat}");
    assert!(stat.contains("Mode:  0755"), "{stat}");
    let stat = debugfs(&art.path, "stat /srv/data.txt");
    assert!(stat.contains("User:  1000   Group:  1000"), "{stat}");
    assert!(stat.contains("Mode:  0600"), "{stat}");
    for (path, mode) in [
        ("/locked/secret", "0000"),
        ("/bin/su", "04755"),
        ("/locked", "0555"),
    ] {
        let stat = debugfs(&art.path, &format!("stat {path}"));
        assert!(stat.contains(&format!("Mode:  {mode}")), "{path}: {stat}");
    }
    assert_eq!(debugfs(&art.path, "cat /locked/secret"), "unreadable");
    assert_eq!(debugfs(&art.path, "cat /locked/late"), "late");
    let console = debugfs(&art.path, "stat /dev/console");
    assert!(console.contains("Type: character special"), "{console}");
    assert!(
        console.contains("Device major/minor number: 05:01"),
        "{console}"
    );
    let link = debugfs(&art.path, "stat /var/run");
    assert!(link.contains("Fast link dest: \"/run\""), "{link}");
    let json = debugfs(&art.path, "cat /.tabbify/app.json");
    let described: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(described["argv"][0], "/bin/hello-http");
    assert_eq!(described["uid"], 1000);
    let init = debugfs(&art.path, "stat /.tabbify/init");
    assert!(init.contains("Mode:  0755"), "{init}");
    // A healthy filesystem.
    let fsck = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&art.path)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn oci_layouts_apply_gzip_layers_and_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let mut layers = hello_layers();
    layers.push(layer_tar(&[
        Item::Empty("etc/.wh.passwd"),
        Item::File {
            path: "etc/motd",
            mode: 0o644,
            uid: 0,
            data: b"new".to_vec(),
        },
    ]));
    oci_layout(&layout, &layers, &hello_config());
    let image = ImageSource::detect(&layout).unwrap();
    assert_eq!(image, ImageSource::OciLayout(layout.clone()));
    let art = build_rootfs(
        &image,
        &AppCommand::default(),
        &cache(&dir.path().join("c")),
    )
    .unwrap();
    let etc = debugfs(&art.path, "ls -l /etc");
    assert!(etc.contains("motd"), "{etc}");
    assert!(!etc.contains("passwd"), "{etc}");
    assert!(debugfs(&art.path, "stat /bin/hello-http").contains("Type: regular"));
}

#[test]
fn a_plain_directory_is_an_image_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(hello_http(), root.join("bin/hello-http")).unwrap();
    let image = ImageSource::detect(&root).unwrap();
    assert_eq!(image, ImageSource::Directory(root.clone()));
    // A directory has no command of its own.
    let e = build_rootfs(
        &image,
        &AppCommand::default(),
        &cache(&dir.path().join("c")),
    )
    .unwrap_err();
    assert!(matches!(e, VmError::App(_)), "{e}");
    let app = AppCommand {
        command: vec!["/bin/hello-http".into()],
        ..Default::default()
    };
    let art = build_rootfs(&image, &app, &cache(&dir.path().join("c"))).unwrap();
    assert!(debugfs(&art.path, "stat /bin/hello-http").contains("Type: regular"));
    // Changing a file changes the digest.
    std::fs::write(root.join("bin/extra"), b"x").unwrap();
    let changed = build_rootfs(&image, &app, &cache(&dir.path().join("c"))).unwrap();
    assert_ne!(changed.digest, art.digest);
}

#[test]
fn broken_images_are_clear_errors_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let app = AppCommand::default();
    let good = dir.path().join("good.tar");
    docker_archive(&good, &hello_layers(), &hello_config());

    // Truncated archive.
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let c = dir.path().join("c-truncated");
    let e = build_rootfs(
        &ImageSource::DockerArchive(truncated.clone()),
        &app,
        &cache(&c),
    )
    .unwrap_err();
    assert!(
        matches!(&e, VmError::Image { path, .. } if path == &truncated),
        "{e}"
    );
    assert_cache_clean(&c);

    // Not an archive at all.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let e = build_rootfs(&ImageSource::DockerArchive(junk), &app, &cache(&c)).unwrap_err();
    assert!(e.to_string().contains("junk.tar"), "{e}");

    // A layer whose content does not match the config's diff_id (a flipped byte).
    let mut layers = hello_layers();
    let wrong_ids = config_with_diff_ids(&layers);
    let last = layers.last_mut().unwrap();
    let n = last.len();
    last[n / 2] ^= 0xff;
    let flipped = dir.path().join("flipped.tar");
    docker_archive_with_config(&flipped, &layers, wrong_ids);
    let c = dir.path().join("c-flipped");
    let e = build_rootfs(&ImageSource::DockerArchive(flipped), &app, &cache(&c)).unwrap_err();
    assert!(
        e.to_string().contains("digest") || e.to_string().contains("corrupt"),
        "{e}"
    );
    assert_cache_clean(&c);

    // A layer entry that climbs out of the root.
    let evil = vec![layer_tar(&[Item::Raw("../../evil", b"x".to_vec())])];
    let evil_tar = dir.path().join("evil.tar");
    docker_archive(&evil_tar, &evil, &hello_config());
    let c = dir.path().join("c-evil");
    let e = build_rootfs(&ImageSource::DockerArchive(evil_tar), &app, &cache(&c)).unwrap_err();
    assert!(e.to_string().contains("climbs out of the root"), "{e}");
    assert!(!dir.path().join("evil").exists());
    assert_cache_clean(&c);

    // An OCI blob that was tampered with after the manifest was written.
    let layout = dir.path().join("oci");
    oci_layout(&layout, &hello_layers(), &hello_config());
    let blobs: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let biggest = blobs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut blob = std::fs::read(biggest).unwrap();
    let n = blob.len();
    blob[n - 20] ^= 0x01;
    std::fs::write(biggest, blob).unwrap();
    let c = dir.path().join("c-oci");
    let e = build_rootfs(&ImageSource::OciLayout(layout), &app, &cache(&c)).unwrap_err();
    assert!(matches!(e, VmError::Image { .. }), "{e}");
    assert_cache_clean(&c);

    // A missing init binary is named.
    let e = build_rootfs(
        &ImageSource::DockerArchive(good),
        &app,
        &RootfsCache::new(dir.path().join("c-init"), dir.path().join("no-init")),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            VmError::Missing {
                what: "guest init binary",
                ..
            }
        ),
        "{e}"
    );
}

/// The config of `layers` as they are now (diff_ids of the unmodified layers).
fn config_with_diff_ids(layers: &[Vec<u8>]) -> Vec<String> {
    layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect()
}

/// Like [`docker_archive`] but with the given diff_ids.
fn docker_archive_with_config(path: &Path, layers: &[Vec<u8>], diff_ids: Vec<String>) {
    let cfg = serde_json::to_vec(&serde_json::json!({
        "config": hello_config(),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("l{i}/layer.tar");
        let mut h = tar::Header::new_ustar();
        h.set_size(l.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, &name, &l[..]).unwrap();
        names.push(name);
    }
    let mut h = tar::Header::new_ustar();
    h.set_size(cfg.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "config.json", &cfg[..]).unwrap();
    let manifest =
        serde_json::to_vec(&serde_json::json!([{"Config": "config.json", "Layers": names}]))
            .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", &manifest[..])
        .unwrap();
    b.finish().unwrap();
}

#[test]
fn a_real_docker_save_archive_builds() {
    tabbify_testkit::require!(tabbify_testkit::Capability::Docker);
    let dir = tempfile::tempdir().unwrap();
    // An image from scratch holding hello-http, made by the real daemon.
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(hello_http(), ctx.join("hello-http")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY hello-http /bin/hello-http\nENV PORT=8080\nENTRYPOINT [\"/bin/hello-http\"]\n",
    )
    .unwrap();
    let tag = format!("tabbify-vm-test:{}", std::process::id());
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    docker(&["build", "-q", "-t", &tag, ctx.to_str().unwrap()]);
    let archive = dir.path().join("saved.tar");
    let saved = std::process::Command::new("docker")
        .args(["save", "-o", archive.to_str().unwrap(), &tag])
        .output()
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .output();
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let art = build_rootfs(
        &ImageSource::detect(&archive).unwrap(),
        &AppCommand::default(),
        &cache(&dir.path().join("c")),
    )
    .unwrap();
    assert_eq!(art.app.argv, vec!["/bin/hello-http"]);
    assert!(art.app.env.contains(&"PORT=8080".to_string()));
    let stat = debugfs(&art.path, "stat /bin/hello-http");
    assert!(stat.contains("Type: regular"), "{stat}");
    assert!(
        stat.contains(&format!(
            "Size: {}",
            std::fs::metadata(hello_http()).unwrap().len()
        )),
        "{stat}"
    );
}

#[test]
fn a_build_without_root_is_byte_identical_to_one_with_root() {
    // Root to switch to `nobody` (setpriv, util-linux); the build itself then runs unprivileged.
    tabbify_testkit::require!(tabbify_testkit::Capability::Root);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut layers = hello_layers();
    layers.push(layer_tar(&[
        Item::DirMode("locked/", 0o555),
        Item::File {
            path: "locked/secret",
            mode: 0o000,
            uid: 0,
            data: b"unreadable".to_vec(),
        },
        Item::File {
            path: "home/web/notes",
            mode: 0o640,
            uid: 1000,
            data: b"mine".to_vec(),
        },
    ]));
    layers.push(layer_tar(&[Item::File {
        path: "locked/late",
        mode: 0o644,
        uid: 0,
        data: b"late".to_vec(),
    }]));
    let archive = dir.path().join("img.tar");
    docker_archive(&archive, &layers, &hello_config());
    let init = dir.path().join("init");
    std::fs::copy(guest_init(), &init).unwrap();
    for p in [&archive, &init] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let nobody_cache = dir.path().join("as-nobody");
    std::fs::create_dir(&nobody_cache).unwrap();
    std::os::unix::fs::chown(&nobody_cache, Some(65534), Some(65534)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_tabbify-vm"))
        .arg("build-rootfs")
        .arg("--image")
        .arg(&archive)
        .arg("--init")
        .arg(&init)
        .arg("--cache")
        .arg(&nobody_cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let as_nobody: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let as_root = build_rootfs(
        &ImageSource::DockerArchive(archive),
        &AppCommand::default(),
        &RootfsCache::new(dir.path().join("as-root"), &init),
    )
    .unwrap();
    let nobody_path = Path::new(as_nobody["path"].as_str().unwrap());
    assert_eq!(sha_file(nobody_path), sha_file(&as_root.path));
    let stat = debugfs(nobody_path, "stat /home/web/notes");
    assert!(stat.contains("User:  1000   Group:  1000"), "{stat}");
    assert_eq!(debugfs(nobody_path, "cat /locked/late"), "late");
}
