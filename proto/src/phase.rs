//! The task phases a heartbeat reports, named as dashboards, logs and
//! Prometheus labels show them.

use crate::v1::TaskPhase;

impl TaskPhase {
    /// Every phase, in the order a task goes through them.
    pub const ALL: [TaskPhase; 6] = [
        TaskPhase::Starting,
        TaskPhase::LoadModel,
        TaskPhase::LoadData,
        TaskPhase::Extract,
        TaskPhase::Probe,
        TaskPhase::Upload,
    ];

    /// The phase's short name (`load_model`, `extract`, …).
    pub fn label(self) -> &'static str {
        match self {
            TaskPhase::Starting => "starting",
            TaskPhase::LoadModel => "load_model",
            TaskPhase::LoadData => "load_data",
            TaskPhase::Extract => "extract",
            TaskPhase::Probe => "probe",
            TaskPhase::Upload => "upload",
        }
    }

    /// The phase a wire value names; a value from a newer peer reads as
    /// [`TaskPhase::Starting`] (unknown progress, not an error).
    pub fn from_wire(value: i32) -> TaskPhase {
        TaskPhase::try_from(value).unwrap_or(TaskPhase::Starting)
    }
}

impl std::fmt::Display for TaskPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_round_trips_through_the_wire_and_has_its_own_label() {
        let mut labels: Vec<&str> = TaskPhase::ALL.iter().map(|p| p.label()).collect();
        for p in TaskPhase::ALL {
            assert_eq!(TaskPhase::from_wire(p as i32), p);
        }
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), TaskPhase::ALL.len());
        assert_eq!(TaskPhase::from_wire(99), TaskPhase::Starting);
        assert_eq!(TaskPhase::LoadModel.to_string(), "load_model");
    }
}
