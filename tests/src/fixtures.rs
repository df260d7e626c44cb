//! Shared fixtures of the end-to-end tests: tiny grids, stand-in datasets
//! and the check every fault test ends with ("every cell exactly once").

use crate::{grid_task_ids, shared_datasets, Cluster};
use cd_common::metrics::CellMetrics;
use cd_proto::v1::SweepStatusResponse;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The sweep name of every end-to-end grid.
pub const SWEEP: &str = "e2e";

/// A grid over tiny random checkpoints: `models` × `noises` × `seeds` cells of
/// generated coin-flip items (`items` per cell).
pub fn tiny_grid(
    models: &Path,
    model_names: &[&str],
    items: usize,
    noises: &[&str],
    seeds: &[u64],
) -> String {
    let mut g = format!(
        r#"version = 1
sweep = "{SWEEP}"
data_root = "{data}"

[storage]
url = "file://unused"
upload_features = true

[scheduling]
max_attempts = 3
lease_ttl_secs = 4
heartbeat_interval_secs = 1

[extraction]
site = "residual"
pooling = "last"
batch_size = 8

[probe]
c = 1.0
"#,
        data = shared_datasets().join("cd").display()
    );
    for name in model_names {
        g.push_str(&format!(
            "\n[[models]]\nname = \"tiny-{name}\"\nsize_b = 0.001\nsource = {{ kind = \"dir\", path = \"{}\" }}\n",
            models.join(name).display()
        ));
    }
    let quoted = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    g.push_str(&format!(
        "\n[axes]\ndatasets = [\"coinflip_gen/{items}\"]\nprecisions = [\"32\"]\nnoise = [{}]\nprompt_modes = [\"paper\"]\nseeds = [{}]\n",
        quoted(noises),
        seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    ));
    g
}

/// Check that storage holds exactly one complete, parseable `metrics.json` per
/// grid cell, matching the cell; returns the files.
pub fn assert_every_cell_once(cluster: &Cluster) -> BTreeMap<String, Vec<u8>> {
    let expected: BTreeSet<String> = grid_task_ids(&cluster.grid_path)
        .unwrap()
        .into_iter()
        .collect();
    let files = cluster.metrics_files(SWEEP);
    let stored: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(
        stored,
        expected,
        "stored metrics.json files differ from the grid's cells\n{}",
        cluster.logs()
    );
    for (id, bytes) in &files {
        let text = std::str::from_utf8(bytes)
            .unwrap_or_else(|_| panic!("{id}: metrics.json is not UTF-8"));
        let m = CellMetrics::from_json(text)
            .unwrap_or_else(|e| panic!("{id}: metrics.json does not parse: {e}"));
        assert_eq!(&m.task_id, id, "metrics.json of {id} names another task");
        assert_eq!(
            m.spec.id().0,
            *id,
            "metrics.json of {id} carries another spec"
        );
        assert!(!m.layers.is_empty(), "{id}: no per-layer results");
        for row in &m.layers {
            assert!(
                (0.0..=1.0).contains(&row.accuracy_mean),
                "{id}: layer {} accuracy {}",
                row.layer,
                row.accuracy_mean
            );
        }
    }
    files
}

/// Parse a safetensors header and return the `features` shape.
pub fn features_shape(bytes: &[u8]) -> Vec<usize> {
    assert!(bytes.len() > 8, "features file too short");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors header is JSON");
    let f = &header["features"];
    let shape: Vec<usize> = f["shape"]
        .as_array()
        .expect("features shape")
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let offsets = f["data_offsets"].as_array().expect("features offsets");
    let (start, end) = (
        offsets[0].as_u64().unwrap() as usize,
        offsets[1].as_u64().unwrap() as usize,
    );
    assert_eq!(
        end - start,
        shape.iter().product::<usize>() * 4,
        "features byte length does not match its f32 shape"
    );
    assert!(8 + n + end <= bytes.len(), "features file is truncated");
    shape
}

/// A small Cities-format file: each city once true, once false.
pub fn cities_standin(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let facts = [
        ("Paris", "France", "Japan"),
        ("Tokyo", "Japan", "France"),
        ("Lagos", "Nigeria", "Chile"),
        ("Lima", "Peru", "Nigeria"),
        ("Oslo", "Norway", "Peru"),
        ("Hanoi", "Vietnam", "Norway"),
        ("Quito", "Ecuador", "Vietnam"),
        ("Cairo", "Egypt", "Ecuador"),
        ("Dhaka", "Bangladesh", "Egypt"),
        ("Accra", "Ghana", "Bangladesh"),
        ("Seoul", "South Korea", "Ghana"),
        ("Rome", "Italy", "South Korea"),
    ];
    let mut csv = String::from("statement,label,city,country,correct_country\n");
    for (city, country, wrong) in facts {
        csv.push_str(&format!(
            "The city of {city} is in {country}.,1,{city},{country},{country}\n"
        ));
        csv.push_str(&format!(
            "The city of {city} is in {wrong}.,0,{city},{wrong},{country}\n"
        ));
    }
    std::fs::write(dir.join("cities.csv"), csv).unwrap();
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Wait for the sweep's end and check that every cell completed and none
/// failed; returns the final status.
pub fn assert_sweep_completes(
    cluster: &Cluster,
    timeout: std::time::Duration,
) -> SweepStatusResponse {
    let status = cluster.wait_for_sweep_done(timeout).unwrap();
    assert_eq!(
        (status.completed, status.failed),
        (status.total, 0),
        "the sweep did not complete every cell\n{}",
        cluster.logs()
    );
    status
}
