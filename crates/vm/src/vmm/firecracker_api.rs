//! Firecracker's REST API on its unix socket: the request bodies we send (typed after the
//! published OpenAPI schema, which the tests check every body against), the list of requests
//! that configures and starts a VM from a [`VmSpec`] (pure), and a minimal HTTP/1.1 exchange.

use crate::error::{IoContext, Result, VmError};
use crate::spec::VmSpec;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `PUT /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfiguration {
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    pub smt: bool,
}

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    pub boot_args: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// `PUT /drives/{drive_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
}

/// `PUT /actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionType {
    InstanceStart,
}

/// One API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: &'static str,
    pub path: String,
    pub body: serde_json::Value,
}

fn put(path: String, body: &impl Serialize) -> ApiRequest {
    ApiRequest {
        method: "PUT",
        path,
        // Our own plain structs always serialize.
        body: serde_json::to_value(body).unwrap_or(serde_json::Value::Null),
    }
}

/// Kernel arguments Firecracker guests need: reboot through the i8042 controller (which
/// Firecracker turns into its exit), and no PCI probing (there is no PCI bus).
pub const FIRECRACKER_CMDLINE: &[&str] = &["reboot=k", "pci=off"];

/// The requests that configure `spec` (machine, kernel, rootfs, network), in order.
pub fn configuration_requests(spec: &VmSpec) -> Vec<ApiRequest> {
    let mut reqs = vec![
        put(
            "/machine-config".into(),
            &MachineConfiguration {
                vcpu_count: spec.vcpus,
                mem_size_mib: spec.memory_mb,
                smt: false,
            },
        ),
        put(
            "/boot-source".into(),
            &BootSource {
                kernel_image_path: spec.kernel.display().to_string(),
                boot_args: spec.kernel_cmdline(FIRECRACKER_CMDLINE),
                initrd_path: spec.initrd.as_ref().map(|p| p.display().to_string()),
            },
        ),
        put(
            "/drives/rootfs".into(),
            &Drive {
                drive_id: "rootfs".into(),
                path_on_host: spec.rootfs.display().to_string(),
                is_root_device: true,
                is_read_only: spec.rootfs_read_only,
            },
        ),
    ];
    if let Some(tap) = &spec.tap {
        reqs.push(put(
            "/network-interfaces/eth0".into(),
            &NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: tap.name.clone(),
                guest_mac: tap.guest_mac.clone(),
            },
        ));
    }
    reqs
}

/// `PUT /actions` with `action`.
pub fn action_request(action: ActionType) -> ApiRequest {
    put(
        "/actions".into(),
        &InstanceActionInfo {
            action_type: action,
        },
    )
}

/// A parsed HTTP response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: String,
}

/// Parses a complete HTTP/1.1 response; `Ok(None)` when more bytes are needed.
pub fn parse_response(buf: &[u8]) -> std::result::Result<Option<ApiResponse>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut length = 0usize;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v
                .trim()
                .parse()
                .map_err(|_| format!("bad content-length {v:?}"))?;
        }
    }
    let body_start = head_end + 4;
    if buf.len() < body_start + length {
        return Ok(None);
    }
    Ok(Some(ApiResponse {
        status,
        body: String::from_utf8_lossy(&buf[body_start..body_start + length]).into_owned(),
    }))
}

/// The message of a Firecracker error body (`{"fault_message": "..."}`), or the body itself.
fn fault_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("fault_message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// Sends `req` on the API socket and checks for a 2xx answer.
pub async fn send(socket: &Path, req: &ApiRequest, timeout: Duration) -> Result<ApiResponse> {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket)
            .await
            .io_ctx(|| format!("connecting to {}", socket.display()))?;
        let body = serde_json::to_vec(&req.body).unwrap_or_default();
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            req.method,
            req.path,
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .io_ctx(|| format!("writing to {}", socket.display()))?;
        s.write_all(&body)
            .await
            .io_ctx(|| format!("writing to {}", socket.display()))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(r) = parse_response(&buf).map_err(|detail| VmError::Vmm {
                vmm: "firecracker",
                detail,
            })? {
                return Ok(r);
            }
            let n = s
                .read(&mut chunk)
                .await
                .io_ctx(|| format!("reading from {}", socket.display()))?;
            if n == 0 {
                return Err(VmError::Vmm {
                    vmm: "firecracker",
                    detail: format!(
                        "the API closed the connection during {} {}",
                        req.method, req.path
                    ),
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let resp = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| VmError::Vmm {
            vmm: "firecracker",
            detail: format!(
                "no API answer to {} {} within {timeout:?}",
                req.method, req.path
            ),
        })??;
    if !(200..300).contains(&resp.status) {
        return Err(VmError::FirecrackerApi {
            method: req.method.into(),
            path: req.path.clone(),
            status: resp.status,
            message: fault_message(&resp.body),
        });
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_and_without_bodies() {
        assert_eq!(parse_response(b"HTTP/1.1 204 No Content\r\n"), Ok(None));
        assert_eq!(
            parse_response(b"HTTP/1.1 204 No Content\r\nServer: Firecracker API\r\n\r\n"),
            Ok(Some(ApiResponse {
                status: 204,
                body: String::new()
            }))
        );
        let r =
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\n{\"fault_message\": \"bad\"}";
        assert_eq!(parse_response(&r[..r.len() - 3]), Ok(None));
        assert_eq!(parse_response(r).unwrap().unwrap().status, 400);
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert_eq!(fault_message("{\"fault_message\": \"bad\"}"), "bad");
        assert_eq!(fault_message("plain"), "plain");
    }

    #[test]
    fn the_configuration_follows_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::spec::tests::spec(dir.path());
        let reqs = configuration_requests(&spec);
        let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/machine-config",
                "/boot-source",
                "/drives/rootfs",
                "/network-interfaces/eth0"
            ]
        );
        assert_eq!(reqs[0].body["vcpu_count"], 1);
        let args = reqs[1].body["boot_args"].as_str().unwrap();
        assert!(args.contains("reboot=k pci=off"), "{args}");
        assert!(reqs[1].body.get("initrd_path").is_none());
        assert_eq!(reqs[3].body["host_dev_name"], "tbfvm3");
        assert_eq!(
            action_request(ActionType::InstanceStart).body,
            serde_json::json!({"action_type": "InstanceStart"})
        );
    }
}
