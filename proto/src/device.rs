//! Device kinds as the coordinator reads them from a registration.

use crate::v1::device::Kind;
use crate::v1::Device;

impl Device {
    /// The device's kind; a worker that did not send one is read by its
    /// name (`cuda:N` or `cpu`), as older workers named them.
    pub fn kind_or_named(&self) -> Kind {
        match Kind::try_from(self.kind).unwrap_or(Kind::Unspecified) {
            Kind::Unspecified if self.name.starts_with("cuda") => Kind::Cuda,
            Kind::Unspecified => Kind::Cpu,
            kind => kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, kind: Kind) -> Device {
        Device {
            name: name.into(),
            memory_bytes: 1,
            kind: kind as i32,
        }
    }

    #[test]
    fn the_sent_kind_wins_and_an_unsent_one_is_read_from_the_name() {
        assert_eq!(device("gpu0", Kind::Cuda).kind_or_named(), Kind::Cuda);
        assert_eq!(device("cuda:1", Kind::Cpu).kind_or_named(), Kind::Cpu);
        assert_eq!(
            device("cuda:1", Kind::Unspecified).kind_or_named(),
            Kind::Cuda
        );
        assert_eq!(device("cpu", Kind::Unspecified).kind_or_named(), Kind::Cpu);
    }
}
