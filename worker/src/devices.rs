//! The worker's devices: parsing `--gpus cpu|all|0,1`, opening them, and
//! reading how much memory each has (what the worker advertises when it
//! registers and what the placement planner splits a model over).
//!
//! CUDA devices exist only in a build with the `cuda` feature; a CPU build
//! asked for GPUs refuses with a message saying how to get a CUDA build,
//! rather than silently running on the CPU.

use candle_core::Device;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Errors choosing or opening devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The `--gpus` value is not `cpu`, `all` or a list of ordinals.
    #[error(
        "invalid --gpus `{value}`: {reason} (expected `cpu`, `all`, or CUDA ordinals like `0,1`)"
    )]
    Parse { value: String, reason: String },
    /// GPUs were asked of a binary built without CUDA.
    #[error(
        "--gpus {requested} asks for CUDA devices but this cd-worker was built without CUDA; \
         build it with scripts/build-cuda.sh (cargo feature `cuda`) or pass --gpus cpu"
    )]
    NoCudaSupport { requested: String },
    /// `--gpus all` found no device.
    #[error("--gpus all: no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")]
    NoCudaDevices,
    /// An ordinal beyond the devices present.
    #[error("--gpus asks for cuda:{ordinal} but only {count} CUDA device(s) are visible")]
    NoSuchDevice { ordinal: usize, count: usize },
    /// The driver failed to open a device or report its memory.
    #[error("cuda:{ordinal}: {message}")]
    Cuda { ordinal: usize, message: String },
    /// Host memory could not be read.
    #[error("reading host memory from /proc/meminfo: {0}")]
    HostMemory(String),
}

/// Which devices the worker runs on, as given by `--gpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    /// The host CPU only.
    Cpu,
    /// Every visible CUDA device.
    All,
    /// These CUDA ordinals, in this order (the model's first layers go to the
    /// first one).
    Ordinals(Vec<usize>),
}

impl FromStr for GpuSelection {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = s.trim();
        let parse_err = |reason: String| DeviceError::Parse {
            value: s.to_string(),
            reason,
        };
        match value {
            "cpu" => return Ok(GpuSelection::Cpu),
            "all" => return Ok(GpuSelection::All),
            "" => return Err(parse_err("empty".into())),
            _ => {}
        }
        let mut ordinals = Vec::new();
        for part in value.split(',') {
            let part = part.trim();
            let ordinal: usize = part
                .parse()
                .map_err(|_| parse_err(format!("`{part}` is not a device ordinal")))?;
            if ordinals.contains(&ordinal) {
                return Err(parse_err(format!("device {ordinal} is listed twice")));
            }
            ordinals.push(ordinal);
        }
        Ok(GpuSelection::Ordinals(ordinals))
    }
}

impl fmt::Display for GpuSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuSelection::Cpu => f.write_str("cpu"),
            GpuSelection::All => f.write_str("all"),
            GpuSelection::Ordinals(o) => {
                let parts: Vec<String> = o.iter().map(|i| i.to_string()).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// One opened device and its memory.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The candle device tensors are placed on.
    pub device: Device,
    /// `cpu` or `cuda:N`: the name used in logs and advertised at registration.
    pub name: String,
    /// Model name as the driver reports it (`NVIDIA H100 80GB HBM3`), or `cpu`.
    pub model: String,
    /// Total memory in bytes (host RAM for the CPU).
    pub total_bytes: u64,
    /// Memory free when the device was opened (available RAM for the CPU).
    pub free_bytes: u64,
}

impl DeviceInfo {
    /// Whether this is a CUDA device (which loses a fixed reserve to the CUDA
    /// context and libraries before any model memory).
    pub fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }
}

/// Open the devices named by `selection`.
pub fn open(selection: &GpuSelection) -> Result<Vec<DeviceInfo>, DeviceError> {
    match selection {
        GpuSelection::Cpu => Ok(vec![cpu_info()?]),
        GpuSelection::All => {
            let count = cuda::device_count(selection)?;
            if count == 0 {
                return Err(DeviceError::NoCudaDevices);
            }
            (0..count).map(cuda::open).collect()
        }
        GpuSelection::Ordinals(ordinals) => {
            let count = cuda::device_count(selection)?;
            if let Some(&ordinal) = ordinals.iter().find(|&&o| o >= count) {
                return Err(DeviceError::NoSuchDevice { ordinal, count });
            }
            ordinals.iter().map(|&o| cuda::open(o)).collect()
        }
    }
}

/// The host CPU as a device: RAM this process may use and RAM available
/// now. Inside a container the cgroup's memory limit (v2 `memory.max`, or
/// v1 `memory.limit_in_bytes`) bounds both, so a pod advertises its limit,
/// not the node's RAM, and the planner never places a model the kernel would
/// OOM-kill.
pub(crate) fn cpu_info() -> Result<DeviceInfo, DeviceError> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| DeviceError::HostMemory(e.to_string()))?;
    let (mut total_bytes, mut free_bytes) =
        parse_meminfo(&meminfo).map_err(DeviceError::HostMemory)?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(limit) = cgroup_memory(Path::new("/sys/fs/cgroup"), &own) {
        total_bytes = total_bytes.min(limit.limit);
        free_bytes = free_bytes.min(limit.limit.saturating_sub(limit.usage));
        tracing::debug!(
            limit = limit.limit,
            usage = limit.usage,
            "memory bounded by the cgroup limit"
        );
    }
    Ok(DeviceInfo {
        device: Device::Cpu,
        name: "cpu".into(),
        model: "cpu".into(),
        total_bytes,
        free_bytes,
    })
}

/// A cgroup memory limit and the memory charged to it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CgroupMemory {
    limit: u64,
    usage: u64,
}

/// The tightest memory limit on this process's cgroup and its ancestors,
/// under the cgroup filesystem `root`, given the text of `/proc/self/cgroup`.
/// `None` when there is no limit (or no cgroup filesystem).
fn cgroup_memory(root: &Path, self_cgroup: &str) -> Option<CgroupMemory> {
    let read = |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    // cgroup v2: `0::/path`; walk from the process's group up to the root.
    if let Some(rel) = self_cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
        let mut dir = root.join(rel.trim().trim_start_matches('/'));
        let mut best: Option<CgroupMemory> = None;
        loop {
            if let Some(limit) = read(dir.join("memory.max")) {
                let usage = read(dir.join("memory.current")).unwrap_or(0);
                if best.is_none_or(|b| limit < b.limit) {
                    best = Some(CgroupMemory { limit, usage });
                }
            }
            if dir == root || !dir.pop() || !dir.starts_with(root) {
                break;
            }
        }
        if best.is_some() {
            return best;
        }
    }
    // cgroup v1: the memory controller's own hierarchy. "Unlimited" is a
    // huge page-rounded number there, so anything beyond 2^60 is no limit.
    let v1 = root.join("memory");
    let limit = read(v1.join("memory.limit_in_bytes")).filter(|&l| l < 1 << 60)?;
    let usage = read(v1.join("memory.usage_in_bytes")).unwrap_or(0);
    Some(CgroupMemory { limit, usage })
}

/// `(MemTotal, MemAvailable)` in bytes from the text of `/proc/meminfo`.
fn parse_meminfo(text: &str) -> Result<(u64, u64), String> {
    let field = |name: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
            .ok_or_else(|| format!("no `{name}` line"))?;
        let kib: u64 = line[name.len() + 1..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .map_err(|_| format!("`{name}` line `{line}` is not a number of kB"))?;
        Ok(kib * 1024)
    };
    Ok((field("MemTotal")?, field("MemAvailable")?))
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{DeviceError, DeviceInfo, GpuSelection};
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    use candle_core::Device;

    pub(super) fn device_count(_selection: &GpuSelection) -> Result<usize, DeviceError> {
        let count = CudaContext::device_count().map_err(|e| DeviceError::Cuda {
            ordinal: 0,
            message: format!("counting devices: {e}"),
        })?;
        Ok(count.max(0) as usize)
    }

    pub(super) fn open(ordinal: usize) -> Result<DeviceInfo, DeviceError> {
        let err = |what: &str, e: &dyn std::fmt::Display| DeviceError::Cuda {
            ordinal,
            message: format!("{what}: {e}"),
        };
        let device = Device::new_cuda(ordinal).map_err(|e| err("opening the device", &e))?;
        let stream = device
            .as_cuda_device()
            .map_err(|e| err("opening the device", &e))?
            .cuda_stream();
        let context = stream.context();
        let model = context.name().map_err(|e| err("reading its name", &e))?;
        let (free, total) = context
            .mem_get_info()
            .map_err(|e| err("reading its memory", &e))?;
        Ok(DeviceInfo {
            device,
            name: format!("cuda:{ordinal}"),
            model,
            total_bytes: total as u64,
            free_bytes: free as u64,
        })
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::{DeviceError, DeviceInfo, GpuSelection};

    pub(super) fn device_count(selection: &GpuSelection) -> Result<usize, DeviceError> {
        Err(DeviceError::NoCudaSupport {
            requested: selection.to_string(),
        })
    }

    pub(super) fn open(_ordinal: usize) -> Result<DeviceInfo, DeviceError> {
        unreachable!("device_count refuses first in a build without CUDA")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("cpu".parse::<GpuSelection>().unwrap(), GpuSelection::Cpu);
        assert_eq!("all".parse::<GpuSelection>().unwrap(), GpuSelection::All);
        assert_eq!(
            " 1, 0 ".parse::<GpuSelection>().unwrap(),
            GpuSelection::Ordinals(vec![1, 0])
        );
        assert_eq!(GpuSelection::Ordinals(vec![0, 1]).to_string(), "0,1");
    }

    #[test]
    fn rejects_bad_lists_naming_the_part() {
        for (input, needle) in [
            ("0,x", "`x` is not"),
            ("0,0", "listed twice"),
            ("", "empty"),
            ("gpu", "`gpu`"),
        ] {
            let err = input.parse::<GpuSelection>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn cpu_reports_host_memory() {
        let devices = open(&GpuSelection::Cpu).unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].name, "cpu");
        assert!(!devices[0].is_cuda());
        assert!(devices[0].total_bytes >= devices[0].free_bytes);
        assert!(devices[0].free_bytes > 0);
    }

    #[test]
    fn cgroup_limits_bound_memory_v2_nested_and_v1() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // No cgroup files: no limit.
        assert_eq!(cgroup_memory(r, "0::/kubepods/pod1/c1\n"), None);
        // v2: "max" (no limit) in the container's group, a limit on the pod.
        let pod = r.join("kubepods/pod1");
        std::fs::create_dir_all(pod.join("c1")).unwrap();
        std::fs::write(pod.join("c1/memory.max"), "max\n").unwrap();
        std::fs::write(pod.join("c1/memory.current"), "100\n").unwrap();
        std::fs::write(pod.join("memory.max"), "8589934592\n").unwrap();
        std::fs::write(pod.join("memory.current"), "1073741824\n").unwrap();
        assert_eq!(
            cgroup_memory(r, "0::/kubepods/pod1/c1\n"),
            Some(CgroupMemory {
                limit: 8 << 30,
                usage: 1 << 30
            })
        );
        // A tighter limit below wins.
        std::fs::write(pod.join("c1/memory.max"), "4294967296\n").unwrap();
        assert_eq!(
            cgroup_memory(r, "0::/kubepods/pod1/c1\n").map(|m| m.limit),
            Some(4 << 30)
        );
        // Namespaced view: the container's group is the root itself.
        std::fs::write(r.join("memory.max"), "2147483648\n").unwrap();
        assert_eq!(cgroup_memory(r, "0::/\n").map(|m| m.limit), Some(2 << 30));
        // v1: a real limit counts, the "unlimited" sentinel does not.
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(v1.path().join("memory")).unwrap();
        let lim = v1.path().join("memory/memory.limit_in_bytes");
        std::fs::write(&lim, "9223372036854771712\n").unwrap();
        let v1_text = "12:memory:/docker/abc\n";
        assert_eq!(cgroup_memory(v1.path(), v1_text), None);
        std::fs::write(&lim, "1073741824\n").unwrap();
        std::fs::write(v1.path().join("memory/memory.usage_in_bytes"), "5\n").unwrap();
        assert_eq!(
            cgroup_memory(v1.path(), v1_text),
            Some(CgroupMemory {
                limit: 1 << 30,
                usage: 5
            })
        );
    }

    #[test]
    fn meminfo_parsing_names_missing_fields() {
        let text = "MemTotal:       16000 kB\nMemFree:  100 kB\nMemAvailable:   8000 kB\n";
        assert_eq!(parse_meminfo(text).unwrap(), (16000 * 1024, 8000 * 1024));
        let err = parse_meminfo("MemTotal: 1 kB\n").unwrap_err();
        assert!(err.contains("MemAvailable"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cpu_build_refuses_gpus_clearly() {
        for sel in ["0,1", "all"] {
            let err = open(&sel.parse().unwrap()).unwrap_err().to_string();
            assert!(
                err.contains("built without CUDA") && err.contains("build-cuda.sh"),
                "{err}"
            );
        }
    }
}
