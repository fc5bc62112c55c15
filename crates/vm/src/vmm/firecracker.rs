//! Firecracker as a VMM: one `firecracker --api-sock` process per VM, configured over its REST
//! API (machine, boot source, root drive, network interface, then `InstanceStart`). The serial
//! console is Firecracker's stdio, as with QEMU. Firecracker needs working KVM; the node uses it
//! whenever the binary is on `PATH` and [`crate::kvm::kvm_runs_guests`] holds.

use super::firecracker_api::{self, ActionType};
use super::{RunningVm, Vmm};
use crate::error::{Result, VmError};
use crate::spec::VmSpec;
use crate::tap::{Tap, TapMode};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// File name of the API socket in the spec's `run_dir`.
pub const API_SOCKET: &str = "firecracker.sock";

/// The Firecracker VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firecracker {
    pub binary: PathBuf,
    /// How long Firecracker may take to open its API socket, and to answer each request.
    pub api_timeout: Duration,
}

impl Firecracker {
    pub fn new(binary: PathBuf) -> Firecracker {
        Firecracker {
            binary,
            api_timeout: Duration::from_secs(5),
        }
    }

    /// Firecracker from `PATH`.
    pub fn from_path() -> Option<Firecracker> {
        super::find_on_path("firecracker").map(Firecracker::new)
    }
}

impl Vmm for Firecracker {
    fn name(&self) -> &'static str {
        "firecracker"
    }

    async fn start(&self, spec: &VmSpec) -> Result<RunningVm> {
        spec.validate()?;
        let socket = spec.run_dir.join(API_SOCKET);
        let _ = std::fs::remove_file(&socket);
        let tap = match &spec.tap {
            Some(cfg) => Some(Tap::create(cfg, TapMode::ByName)?),
            None => None,
        };
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--api-sock")
            .arg(&socket)
            .arg("--id")
            .arg(&spec.name);
        let mut vm = RunningVm::launch(self.name(), cmd, spec, tap, vec![socket.clone()])?;

        // The socket appears once Firecracker is ready for requests.
        let deadline = Instant::now() + self.api_timeout;
        loop {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = vm.child.try_wait() {
                vm.drain_pumps().await;
                return Err(VmError::Vmm {
                    vmm: "firecracker",
                    detail: format!(
                        "exited with {status} before its API socket appeared; output:\n{}",
                        vm.console_tail()
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::Vmm {
                    vmm: "firecracker",
                    detail: format!(
                        "no API socket at {} after {:?}",
                        socket.display(),
                        self.api_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // An error drops `vm`, which kills Firecracker and removes the tap and socket.
        for req in firecracker_api::configuration_requests(spec) {
            firecracker_api::send(&socket, &req, self.api_timeout).await?;
        }
        firecracker_api::send(
            &socket,
            &firecracker_api::action_request(ActionType::InstanceStart),
            self.api_timeout,
        )
        .await?;
        Ok(vm)
    }
}
