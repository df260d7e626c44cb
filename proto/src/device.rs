//! Device kinds as both sides read them.

use crate::v1::{Device, DeviceKind};

impl Device {
    /// The device's kind; a worker that did not send one is read by its
    /// name (`cuda:N` or `cpu`), as older workers named them.
    pub fn kind_or_named(&self) -> DeviceKind {
        match DeviceKind::try_from(self.kind).unwrap_or(DeviceKind::Unspecified) {
            DeviceKind::Unspecified if self.name.starts_with("cuda") => DeviceKind::Cuda,
            DeviceKind::Unspecified => DeviceKind::Cpu,
            kind => kind,
        }
    }
}

impl DeviceKind {
    /// `cpu` or `cuda`, as grids name device kinds.
    pub fn label(self) -> &'static str {
        match self {
            DeviceKind::Cuda => "cuda",
            DeviceKind::Cpu | DeviceKind::Unspecified => "cpu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, kind: DeviceKind) -> Device {
        Device {
            name: name.into(),
            memory_bytes: 1,
            kind: kind as i32,
        }
    }

    #[test]
    fn the_sent_kind_wins_and_an_unsent_one_is_read_from_the_name() {
        assert_eq!(
            device("gpu0", DeviceKind::Cuda).kind_or_named(),
            DeviceKind::Cuda
        );
        assert_eq!(
            device("cuda:1", DeviceKind::Cpu).kind_or_named(),
            DeviceKind::Cpu
        );
        assert_eq!(
            device("cuda:1", DeviceKind::Unspecified).kind_or_named(),
            DeviceKind::Cuda
        );
        assert_eq!(
            device("cpu", DeviceKind::Unspecified).kind_or_named(),
            DeviceKind::Cpu
        );
        assert_eq!(DeviceKind::Cuda.label(), "cuda");
    }
}
