//! Who this worker is: its id, host, token and devices.

use super::{AgentArgs, AgentError};
use crate::devices::{self, DeviceInfo, GpuSelection};
use cd_proto::v1::{device, Device};

/// The host name, from the kernel (falls back to `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `--worker-id`, or `<hostname>-<pid>`.
pub fn worker_id(args: &AgentArgs, host: &str) -> String {
    match &args.worker_id {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => format!("{host}-{}", std::process::id()),
    }
}

/// The bearer token: `--token-file` wins, then the `CD_TOKEN` variable; none
/// is fine for a coordinator that runs without one.
pub fn token(args: &AgentArgs) -> Result<Option<String>, AgentError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::Config(format!("--token-file {}: {e}", path.display())))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(AgentError::Config(format!(
                "--token-file {}: the file is empty",
                path.display()
            )));
        }
        return Ok(Some(token.to_string()));
    }
    Ok(std::env::var("CD_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// Open the devices `--gpus` names.
pub(crate) fn open_devices(gpus: &str) -> Result<Vec<DeviceInfo>, AgentError> {
    let selection: GpuSelection = gpus
        .parse()
        .map_err(|e: devices::DeviceError| AgentError::Config(e.to_string()))?;
    devices::open(&selection).map_err(|e| AgentError::Config(e.to_string()))
}

/// Devices as the protocol advertises them.
pub fn advertised(devices: &[DeviceInfo]) -> Vec<Device> {
    devices
        .iter()
        .map(|d| Device {
            name: d.name.clone(),
            memory_bytes: d.total_bytes,
            kind: if d.is_cuda() {
                device::Kind::Cuda
            } else {
                device::Kind::Cpu
            } as i32,
        })
        .collect()
}
