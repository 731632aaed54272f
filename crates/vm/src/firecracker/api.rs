//! Firecracker's HTTP API: request bodies as its swagger defines them, and a
//! client that maps every refusal into [`VmError::Api`].
//!
//! Only the fields this backend sets are modelled; optional fields it leaves
//! to Firecracker's defaults are not serialized at all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::http::{self, HttpError, Response};
use crate::backend::VmError;

/// The name errors give this API.
pub const API_NAME: &str = "Firecracker";

/// `PUT /boot-source` (swagger `BootSource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    /// Kernel image (ELF vmlinux; bzImage only on Firecracker 1.17+).
    pub kernel_image_path: String,
    /// Initramfs, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Kernel command line.
    pub boot_args: String,
}

/// `PUT /drives/{drive_id}` (swagger `Drive`, virtio-block variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    /// The drive's id, also the last path segment of the request.
    pub drive_id: String,
    /// Backing file on the host (relative paths resolve against Firecracker's cwd).
    pub path_on_host: String,
    /// Whether the guest boots from it.
    pub is_root_device: bool,
    /// Whether the guest may only read it.
    pub is_read_only: bool,
}

/// `PUT /machine-config` (swagger `MachineConfiguration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    /// Virtual CPUs (1 or an even number up to 32).
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u32,
}

/// `PUT /vsock` (swagger `Vsock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vsock {
    /// The guest's context id (3 or more).
    pub guest_cid: u32,
    /// Unix socket Firecracker listens on for host-initiated connections.
    pub uds_path: String,
}

/// `PUT /network-interfaces/{iface_id}` (swagger `NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    /// The interface's id, also the last path segment of the request.
    pub iface_id: String,
    /// The host tap device backing it.
    pub host_dev_name: String,
    /// The guest's MAC address, if fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `action_type` of `PUT /actions` (swagger `InstanceActionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionType {
    /// Boots the configured microVM.
    InstanceStart,
    /// Sends Ctrl+Alt+Del through the i8042 keyboard controller (x86_64 only).
    SendCtrlAltDel,
    /// Writes the metrics out now.
    FlushMetrics,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InstanceAction {
    /// The action.
    pub action_type: ActionType,
}

/// `state` of `PATCH /vm` (swagger `Vm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmState {
    /// Stop the vCPUs.
    Paused,
    /// Run the vCPUs again.
    Resumed,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmStateChange {
    /// The state to enter.
    pub state: VmState,
}

/// `snapshot_type` of `PUT /snapshot/create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SnapshotType {
    /// All guest memory.
    Full,
    /// Only pages dirtied since the last snapshot (needs dirty page tracking).
    Diff,
}

/// `PUT /snapshot/create` (swagger `SnapshotCreateParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotCreate {
    /// Full or diff.
    pub snapshot_type: SnapshotType,
    /// File to write the microVM state to.
    pub snapshot_path: String,
    /// File to write guest memory to.
    pub mem_file_path: String,
}

/// `backend_type` of a memory backend (swagger `MemoryBackend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemoryBackendType {
    /// Guest memory is mapped from a file.
    File,
    /// Page faults are served by a process behind a Unix socket.
    Uffd,
}

/// Where restored guest memory comes from (swagger `MemoryBackend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryBackend {
    /// File or userfaultfd.
    pub backend_type: MemoryBackendType,
    /// The memory file, or the userfaultfd handler's socket.
    pub backend_path: String,
}

/// Replaces the tap device behind a snapshotted interface (swagger `NetworkOverride`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkOverride {
    /// The interface, as configured before the snapshot.
    pub iface_id: String,
    /// The tap device to use now.
    pub host_dev_name: String,
}

/// `PUT /snapshot/load` (swagger `SnapshotLoadParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotLoad {
    /// The microVM state file.
    pub snapshot_path: String,
    /// The guest memory source.
    pub mem_backend: MemoryBackend,
    /// Resume the vCPUs once loaded.
    pub resume_vm: bool,
    /// Tap devices to swap in (only sent when non-empty, for older Firecrackers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
}

/// `GET /` answer (swagger `InstanceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceInfo {
    /// Application name (`Firecracker`).
    pub app_name: String,
    /// The instance id.
    pub id: String,
    /// `Not started`, `Running` or `Paused`.
    pub state: String,
    /// Firecracker's version.
    pub vmm_version: String,
}

/// `GET /version` answer (swagger `FirecrackerVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FirecrackerVersion {
    /// Firecracker's version.
    pub firecracker_version: String,
}

/// Firecracker's error body (swagger `Error`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct FaultBody {
    fault_message: String,
}

/// The [`VmError::Api`] for a non-2xx answer to `request` (e.g. `PUT /actions`).
///
/// The message is the body's `fault_message` when it has one, else the
/// status and raw body.
pub fn api_error(request: &str, response: &Response) -> VmError {
    let message = match serde_json::from_slice::<FaultBody>(&response.body) {
        Ok(fault) => format!("{} (HTTP {})", fault.fault_message, response.status),
        Err(_) => {
            let body = String::from_utf8_lossy(&response.body);
            let body = body.trim();
            if body.is_empty() {
                format!("HTTP {} {}", response.status, response.reason.trim())
            } else {
                format!(
                    "HTTP {} {}: {body}",
                    response.status,
                    response.reason.trim()
                )
            }
        }
    };
    VmError::Api {
        api: API_NAME,
        request: request.to_string(),
        message,
    }
}

fn transport_error(request: &str, err: HttpError) -> VmError {
    VmError::Api {
        api: API_NAME,
        request: request.to_string(),
        message: err.to_string(),
    }
}

/// A client for one Firecracker process's API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    /// A client for the API socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path` with an optional JSON body; a non-2xx answer
    /// becomes [`VmError::Api`] naming the request.
    pub async fn send<T: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&T>,
    ) -> Result<Response, VmError> {
        let request = format!("{method} {path}");
        let json = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|err| VmError::Api {
                api: API_NAME,
                request: request.clone(),
                message: format!("cannot encode the body: {err}"),
            })?;
        let response = http::request(&self.socket, method, path, json.as_deref())
            .await
            .map_err(|err| transport_error(&request, err))?;
        if response.is_success() {
            Ok(response)
        } else {
            Err(api_error(&request, &response))
        }
    }

    async fn put<T: Serialize>(&self, path: &str, body: &T) -> Result<(), VmError> {
        self.send("PUT", path, Some(body)).await.map(drop)
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, VmError> {
        let response = self.send::<()>("GET", path, None).await?;
        serde_json::from_slice(&response.body).map_err(|err| VmError::Api {
            api: API_NAME,
            request: format!("GET {path}"),
            message: format!("unexpected answer: {err}"),
        })
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, body: &BootSource) -> Result<(), VmError> {
        self.put("/boot-source", body).await
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&self, body: &Drive) -> Result<(), VmError> {
        self.put(&format!("/drives/{}", body.drive_id), body).await
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(&self, body: &MachineConfig) -> Result<(), VmError> {
        self.put("/machine-config", body).await
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&self, body: &Vsock) -> Result<(), VmError> {
        self.put("/vsock", body).await
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(&self, body: &NetworkInterface) -> Result<(), VmError> {
        self.put(&format!("/network-interfaces/{}", body.iface_id), body)
            .await
    }

    /// `PUT /actions`.
    pub async fn action(&self, action_type: ActionType) -> Result<(), VmError> {
        self.put("/actions", &InstanceAction { action_type }).await
    }

    /// `PATCH /vm`.
    pub async fn set_vm_state(&self, state: VmState) -> Result<(), VmError> {
        self.send("PATCH", "/vm", Some(&VmStateChange { state }))
            .await
            .map(drop)
    }

    /// `PUT /snapshot/create`.
    pub async fn create_snapshot(&self, body: &SnapshotCreate) -> Result<(), VmError> {
        self.put("/snapshot/create", body).await
    }

    /// `PUT /snapshot/load`.
    pub async fn load_snapshot(&self, body: &SnapshotLoad) -> Result<(), VmError> {
        self.put("/snapshot/load", body).await
    }

    /// `GET /`.
    pub async fn instance_info(&self) -> Result<InstanceInfo, VmError> {
        self.get("/").await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<FirecrackerVersion, VmError> {
        self.get("/version").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn boot_source_body() {
        let body = BootSource {
            kernel_image_path: "vmlinux".into(),
            initrd_path: Some("initrd".into()),
            boot_args: "console=ttyS0".into(),
        };
        assert_eq!(
            json(&body),
            r#"{"kernel_image_path":"vmlinux","initrd_path":"initrd","boot_args":"console=ttyS0"}"#
        );
        let without_initrd = BootSource {
            initrd_path: None,
            ..body
        };
        assert_eq!(
            json(&without_initrd),
            r#"{"kernel_image_path":"vmlinux","boot_args":"console=ttyS0"}"#
        );
    }

    #[test]
    fn drive_machine_vsock_and_network_bodies() {
        assert_eq!(
            json(&Drive {
                drive_id: "rootfs".into(),
                path_on_host: "rootfs.ext4".into(),
                is_root_device: true,
                is_read_only: false,
            }),
            r#"{"drive_id":"rootfs","path_on_host":"rootfs.ext4","is_root_device":true,"is_read_only":false}"#
        );
        assert_eq!(
            json(&MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 512
            }),
            r#"{"vcpu_count":2,"mem_size_mib":512}"#
        );
        assert_eq!(
            json(&Vsock {
                guest_cid: 3,
                uds_path: "vsock.sock".into()
            }),
            r#"{"guest_cid":3,"uds_path":"vsock.sock"}"#
        );
        assert_eq!(
            json(&NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "frtap0".into(),
                guest_mac: Some("06:00:ac:10:00:02".into()),
            }),
            r#"{"iface_id":"eth0","host_dev_name":"frtap0","guest_mac":"06:00:ac:10:00:02"}"#
        );
    }

    #[test]
    fn action_and_state_bodies() {
        assert_eq!(
            json(&InstanceAction {
                action_type: ActionType::InstanceStart
            }),
            r#"{"action_type":"InstanceStart"}"#
        );
        assert_eq!(
            json(&InstanceAction {
                action_type: ActionType::SendCtrlAltDel
            }),
            r#"{"action_type":"SendCtrlAltDel"}"#
        );
        assert_eq!(
            json(&VmStateChange {
                state: VmState::Paused
            }),
            r#"{"state":"Paused"}"#
        );
        assert_eq!(
            json(&VmStateChange {
                state: VmState::Resumed
            }),
            r#"{"state":"Resumed"}"#
        );
    }

    #[test]
    fn snapshot_bodies() {
        assert_eq!(
            json(&SnapshotCreate {
                snapshot_type: SnapshotType::Full,
                snapshot_path: "snapshot/vmstate".into(),
                mem_file_path: "snapshot/memory".into(),
            }),
            r#"{"snapshot_type":"Full","snapshot_path":"snapshot/vmstate","mem_file_path":"snapshot/memory"}"#
        );
        let load = SnapshotLoad {
            snapshot_path: "vmstate".into(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "memory".into(),
            },
            resume_vm: true,
            network_overrides: Vec::new(),
        };
        assert_eq!(
            json(&load),
            r#"{"snapshot_path":"vmstate","mem_backend":{"backend_type":"File","backend_path":"memory"},"resume_vm":true}"#
        );
        let with_tap = SnapshotLoad {
            network_overrides: vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: "frtap7".into(),
            }],
            ..load
        };
        assert!(json(&with_tap)
            .ends_with(r#""network_overrides":[{"iface_id":"eth0","host_dev_name":"frtap7"}]}"#));
    }

    #[test]
    fn answers_deserialize() {
        let info: InstanceInfo = serde_json::from_str(
            r#"{"id":"anonymous-instance","state":"Not started","vmm_version":"1.10.1","app_name":"Firecracker"}"#,
        )
        .unwrap();
        assert_eq!(info.state, "Not started");
        let version: FirecrackerVersion =
            serde_json::from_str(r#"{"firecracker_version":"1.10.1"}"#).unwrap();
        assert_eq!(version.firecracker_version, "1.10.1");
    }

    fn response(status: u16, reason: &str, body: &str) -> Response {
        Response {
            status,
            reason: reason.into(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn message_of(err: VmError) -> (String, String) {
        match err {
            VmError::Api {
                api,
                request,
                message,
            } => {
                assert_eq!(api, API_NAME);
                (request, message)
            }
            other => panic!("not an API error: {other:?}"),
        }
    }

    #[test]
    fn maps_fault_messages_into_api_errors() {
        let err = api_error(
            "PUT /boot-source",
            &response(
                400,
                "Bad Request",
                r#"{"fault_message":"The kernel file cannot be opened: No such file or directory (os error 2)"}"#,
            ),
        );
        let (request, message) = message_of(err);
        assert_eq!(request, "PUT /boot-source");
        assert_eq!(
            message,
            "The kernel file cannot be opened: No such file or directory (os error 2) (HTTP 400)"
        );
        assert_eq!(
            api_error(
                "PUT /actions",
                &response(400, "Bad Request", r#"{"fault_message":"x"}"#)
            )
            .to_string(),
            "Firecracker request PUT /actions failed: x (HTTP 400)"
        );
    }

    #[test]
    fn maps_bodies_without_fault_message() {
        let (_, message) = message_of(api_error(
            "PATCH /vm",
            &response(500, "Internal Server Error", "oops\n"),
        ));
        assert_eq!(message, "HTTP 500 Internal Server Error: oops");
        let (_, message) = message_of(api_error("GET /", &response(404, "Not Found", "")));
        assert_eq!(message, "HTTP 404 Not Found");
    }

    #[tokio::test]
    async fn an_unreachable_socket_is_an_api_error_naming_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let client = ApiClient::new(dir.path().join("missing.sock"));
        let (request, message) =
            message_of(client.action(ActionType::InstanceStart).await.unwrap_err());
        assert_eq!(request, "PUT /actions");
        assert!(message.contains("No such file"), "{message}");
    }
}
