//! Which runtimes this node offers right now: what the last probe found, as pure checks. A docker
//! app is taken only while the Docker daemon answers (the `docker` tag is advertised), and the
//! docker apps already here say so while it does not. A microVM app is taken when some VMM can
//! boot it here — QEMU emulating the CPU included, which is slow but real; whether the node
//! *advertises* microVMs (the `firecracker` tag) is the stricter question of `probe`.

use super::error::AppError;
use crate::probe::Capabilities;
use tabbify_wire::app::RuntimeKind;

/// `Ok` when this node can run an app of `kind` according to `caps`.
pub fn check(kind: RuntimeKind, caps: &Capabilities) -> Result<(), AppError> {
    match kind {
        RuntimeKind::Docker if !caps.docker => Err(AppError::Unsupported(format!(
            "this node offers no docker runtime right now: {} (the node probes again every --probe-interval and takes docker apps once a daemon answers)",
            caps.docker_detail
        ))),
        RuntimeKind::Firecracker if !caps.runs_vms() => Err(AppError::Unsupported(format!(
            "this node cannot boot microVMs: {}",
            caps.vm_detail
        ))),
        _ => Ok(()),
    }
}

/// Why the node cannot run apps of `kind` right now, for the app's view; `None` when it can.
pub fn unavailable(kind: RuntimeKind, caps: &Capabilities) -> Option<String> {
    match kind {
        RuntimeKind::Docker if !caps.docker => Some(format!(
            "the node's Docker daemon is not available: {}; the container may still run, but the node cannot see or restart it until the daemon answers again",
            caps.docker_detail
        )),
        RuntimeKind::Firecracker if !caps.runs_vms() => Some(format!(
            "the node can no longer boot microVMs: {}",
            caps.vm_detail
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_apps_need_a_daemon() {
        let mut caps = Capabilities {
            docker_detail: "daemon does not answer: connection refused".into(),
            ..Default::default()
        };
        let e = check(RuntimeKind::Docker, &caps).unwrap_err();
        assert!(matches!(e, AppError::Unsupported(_)));
        assert!(e.to_string().contains("connection refused"), "{e}");
        assert!(check(RuntimeKind::Wasm, &caps).is_ok());
        caps.docker = true;
        assert!(check(RuntimeKind::Docker, &caps).is_ok());
    }

    #[test]
    fn docker_apps_say_when_the_daemon_is_gone() {
        let mut caps = Capabilities {
            docker_detail: "daemon does not answer: connection refused".into(),
            ..Default::default()
        };
        let note = unavailable(RuntimeKind::Docker, &caps).unwrap();
        assert!(note.contains("connection refused"), "{note}");
        assert_eq!(unavailable(RuntimeKind::Wasm, &caps), None);
        caps.docker = true;
        assert_eq!(unavailable(RuntimeKind::Docker, &caps), None);
    }

    #[test]
    fn microvm_apps_need_a_vmm_that_boots_guests_tcg_included() {
        let mut caps = Capabilities {
            vm_detail: "no VMM".into(),
            ..Default::default()
        };
        let e = check(RuntimeKind::Firecracker, &caps).unwrap_err();
        assert!(matches!(e, AppError::Unsupported(_)));
        assert!(e.to_string().contains("no VMM"), "{e}");
        assert!(unavailable(RuntimeKind::Firecracker, &caps).is_some());
        // QEMU under TCG runs the app, though the node never advertises `firecracker` for it.
        caps.vm_runtime = Some("qemu-tcg".into());
        assert!(check(RuntimeKind::Firecracker, &caps).is_ok());
        assert_eq!(unavailable(RuntimeKind::Firecracker, &caps), None);
        assert!(!caps.firecracker());
    }
}
