//! Property tests of the grid and task-spec parsers: arbitrary text and
//! arbitrary edits of valid files never panic; every scheduling value inside
//! its documented range is accepted and every value outside it is refused
//! naming the field; specs round-trip through their canonical JSON with a
//! stable task id.

use cd_common::grid::{Grid, GridError};
use cd_common::spec::TaskSpec;
use proptest::prelude::*;
use std::path::Path;

const VALID: &str = r#"version = 1
sweep = "prop"
data_root = "/data"
[storage]
url = "memory://"
[scheduling]
max_attempts = 3
lease_ttl_secs = 300
heartbeat_interval_secs = 20
stall_timeout_secs = 3600
[extraction]
batch_size = 8
[[models]]
name = "a"
size_b = 1.0
source = { kind = "hub", repo = "org/a" }
[axes]
datasets = ["coinflip_gen/40"]
precisions = ["32", "16"]
noise = ["none"]
seeds = [0, 1]
"#;

fn parse(text: &str) -> Result<Grid, GridError> {
    Grid::parse(text, Path::new("prop.toml"))
}

/// The field an invalid grid is refused for.
fn refused_field(text: &str) -> Option<String> {
    match parse(text) {
        Err(GridError::Invalid { field, .. }) => Some(field),
        _ => None,
    }
}

proptest! {
    // No regression files are written into the source tree: a failure
    // prints its minimal input, which becomes a plain test.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse(&text);
        let _ = TaskSpec::from_json(&text);
    }

    #[test]
    fn edited_grids_never_panic_and_errors_name_the_file(
        at in 0usize..VALID.len(),
        cut in 0usize..40,
        insert in "[ -~\n]{0,24}",
    ) {
        let mut text = VALID.as_bytes()[..at].to_vec();
        text.extend_from_slice(insert.as_bytes());
        text.extend_from_slice(&VALID.as_bytes()[(at + cut).min(VALID.len())..]);
        let text = String::from_utf8_lossy(&text).into_owned();
        if let Err(e) = parse(&text) {
            prop_assert!(e.to_string().contains("prop.toml"), "{e}");
        }
    }

    #[test]
    fn scheduling_values_in_range_pass_and_out_of_range_name_the_field(
        attempts in 0u64..300,
        ttl in 0u64..200_000,
        beat in 0u64..200_000,
        batch in 0u64..10_000,
        stall in 0u64..200_000,
    ) {
        let text = VALID
            .replace("max_attempts = 3", &format!("max_attempts = {attempts}"))
            .replace("lease_ttl_secs = 300", &format!("lease_ttl_secs = {ttl}"))
            .replace("heartbeat_interval_secs = 20", &format!("heartbeat_interval_secs = {beat}"))
            .replace("batch_size = 8", &format!("batch_size = {batch}"))
            .replace("stall_timeout_secs = 3600", &format!("stall_timeout_secs = {stall}"));
        // The documented ranges (grid reference, common/src/grid/file.rs).
        let attempts_ok = (1..=100).contains(&attempts);
        let ttl_ok = (1..=86_400).contains(&ttl);
        let beat_ok = beat >= 1 && beat < ttl;
        let batch_ok = (1..=4096).contains(&batch);
        let stall_ok = (60..=86_400).contains(&stall) && stall > beat;
        // load_stall_timeout_secs keeps its default, 14400.
        let load_stall_ok = 14_400 > beat;
        match refused_field(&text) {
            None => {
                prop_assert!(attempts_ok && ttl_ok && beat_ok && batch_ok && stall_ok && load_stall_ok,
                    "accepted attempts={attempts} ttl={ttl} beat={beat} batch={batch} stall={stall}");
            }
            Some(field) => {
                let named_bad = match field.as_str() {
                    "scheduling.max_attempts" => !attempts_ok,
                    "scheduling.lease_ttl_secs" => !ttl_ok,
                    "scheduling.heartbeat_interval_secs" => !beat_ok,
                    "extraction.batch_size" => !batch_ok,
                    "scheduling.stall_timeout_secs" => !stall_ok,
                    "scheduling.load_stall_timeout_secs" => !load_stall_ok,
                    _ => false,
                };
                prop_assert!(named_bad, "refused for `{field}`, which is in range: attempts={attempts} ttl={ttl} beat={beat} batch={batch} stall={stall}");
            }
        }
    }

    #[test]
    fn specs_round_trip_with_stable_ids(
        seeds in proptest::collection::btree_set(0u64..1_000_000, 1..4),
        items in 2usize..5000,
        noise in prop_oneof![Just("none"), Just("prefix-aaa-bbb")],
    ) {
        let seeds: Vec<String> = seeds.iter().map(u64::to_string).collect();
        let text = VALID
            .replace("seeds = [0, 1]", &format!("seeds = [{}]", seeds.join(", ")))
            .replace("coinflip_gen/40", &format!("coinflip_gen/{items}"))
            .replace("noise = [\"none\"]", &format!("noise = [\"{noise}\"]"));
        let grid = parse(&text).expect("a valid grid");
        prop_assert_eq!(grid.tasks.len(), seeds.len() * 2);
        for spec in &grid.tasks {
            let json = spec.canonical_json();
            let back = TaskSpec::from_json(&json).expect("canonical JSON parses");
            prop_assert_eq!(&back, spec);
            prop_assert_eq!(back.id(), spec.id());
            prop_assert_eq!(back.canonical_json(), json);
        }
    }
}
