//! What to run in the guest: the caller's [`AppCommand`] laid over the image's own configuration
//! (entrypoint, command, environment, working directory, user) gives the [`GuestApp`] that init
//! reads. Pure functions over plain data; user names are looked up in the image's own
//! `/etc/passwd` and `/etc/group` text.

use crate::error::{Result, VmError};
use crate::image::ImageConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tabbify_vm_init::contract::GuestApp;

/// `PATH` when neither the image nor the app sets one (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The caller's side of what to run. Empty fields fall back to the image's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCommand {
    /// Replaces the image's entrypoint and command when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    /// Added to (and overriding) the image's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the image's, or `/`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; the image's, or root.
    #[serde(default)]
    pub user: Option<String>,
}

/// The command, environment and working directory, before the user is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedApp {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
}

/// Lays `app` over `image`.
pub fn merge(image: &ImageConfig, app: &AppCommand) -> Result<MergedApp> {
    let argv = if app.command.is_empty() {
        image
            .entrypoint
            .iter()
            .chain(&image.cmd)
            .cloned()
            .collect::<Vec<_>>()
    } else {
        app.command.clone()
    };
    if argv.is_empty() {
        return Err(VmError::App(
            "no command: the image has no entrypoint or cmd, and the app gives none".into(),
        ));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    for (k, v) in &app.env {
        if k.is_empty() || k.contains('=') {
            return Err(VmError::App(format!("environment name {k:?} is not valid")));
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    let workdir = app
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        return Err(VmError::App(format!(
            "working directory {workdir:?} is not absolute"
        )));
    }
    let user = app
        .user
        .clone()
        .or_else(|| image.user.clone())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "0".into());
    Ok(MergedApp {
        argv,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        workdir,
        user,
    })
}

/// Looks `name` up in `/etc/passwd`-style text: (uid, primary gid).
fn passwd_lookup(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn passwd_gid_of_uid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[3].parse().ok())?
    })
}

fn group_lookup(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, any mix) with the image's passwd and
/// group files (empty text when the image has none).
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, passwd_gid_of_uid(passwd, uid)),
        Err(_) => {
            let (uid, gid) = passwd_lookup(passwd, u).ok_or_else(|| {
                VmError::App(format!("user {u:?} is not in the image's /etc/passwd"))
            })?;
            (uid, Some(gid))
        }
    };
    let gid = match g {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_lookup(group, g).ok_or_else(|| {
                VmError::App(format!("group {g:?} is not in the image's /etc/group"))
            })?,
        },
    };
    Ok((uid, gid))
}

/// The final description for init.
pub fn guest_app(merged: MergedApp, uid: u32, gid: u32) -> Result<GuestApp> {
    let app = GuestApp {
        argv: merged.argv,
        env: merged.env,
        workdir: merged.workdir,
        uid,
        gid,
    };
    app.validate().map_err(|e| VmError::App(e.to_string()))?;
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into(), "KEEP=1".into()],
            working_dir: Some("/srv".into()),
            user: Some("web".into()),
        }
    }

    #[test]
    fn the_image_config_is_the_default() {
        let m = merge(&image(), &AppCommand::default()).unwrap();
        assert_eq!(m.argv, vec!["/bin/app", "--serve"]);
        assert_eq!(m.env, vec!["PATH=/bin", "MODE=image", "KEEP=1"]);
        assert_eq!(m.workdir, "/srv");
        assert_eq!(m.user, "web");
    }

    #[test]
    fn the_app_overrides_the_image() {
        let app = AppCommand {
            command: vec!["/bin/other".into()],
            env: [
                ("MODE".to_string(), "app".to_string()),
                ("PORT".into(), "8080".into()),
            ]
            .into(),
            workdir: Some("/".into()),
            user: Some("0:0".into()),
        };
        let m = merge(&image(), &app).unwrap();
        assert_eq!(m.argv, vec!["/bin/other"]);
        assert_eq!(m.env, vec!["PATH=/bin", "KEEP=1", "MODE=app", "PORT=8080"]);
        assert_eq!((m.workdir.as_str(), m.user.as_str()), ("/", "0:0"));
    }

    #[test]
    fn defaults_fill_an_empty_config_and_no_command_is_an_error() {
        let app = AppCommand {
            command: vec!["/hello".into()],
            ..Default::default()
        };
        let m = merge(&ImageConfig::default(), &app).unwrap();
        assert_eq!(m.env, vec![format!("PATH={DEFAULT_PATH}")]);
        assert_eq!((m.workdir.as_str(), m.user.as_str()), ("/", "0"));
        let e = merge(&ImageConfig::default(), &AppCommand::default()).unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        let bad = AppCommand {
            command: vec!["/x".into()],
            workdir: Some("rel".into()),
            ..Default::default()
        };
        assert!(merge(&ImageConfig::default(), &bad).is_err());
        let bad = AppCommand {
            command: vec!["/x".into()],
            env: [("A=B".to_string(), "c".to_string())].into(),
            ..Default::default()
        };
        assert!(merge(&ImageConfig::default(), &bad).is_err());
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nweb:x:101:102::/srv:/bin/false\n";
        let group = "root:x:0:\nwww:x:33:\n";
        assert_eq!(resolve_user("web", passwd, group).unwrap(), (101, 102));
        assert_eq!(resolve_user("web:www", passwd, group).unwrap(), (101, 33));
        assert_eq!(resolve_user("101", passwd, group).unwrap(), (101, 102));
        assert_eq!(resolve_user("5000", passwd, group).unwrap(), (5000, 5000));
        assert_eq!(resolve_user("5000:7", "", "").unwrap(), (5000, 7));
        assert!(resolve_user("nobody", passwd, group).is_err());
        assert!(resolve_user("web:nogroup", passwd, group).is_err());
    }
}
