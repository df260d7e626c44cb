//! Grids: the TOML description of a sweep, its validation and its expansion
//! into one resolved [`TaskSpec`] per cell.
//!
//! A grid is versioned (`version = 1`) and strict (`deny_unknown_fields`
//! everywhere). Every error names the file, the line and column, and the field
//! at fault, and nothing runs until the whole grid is valid. Every number has
//! a documented range (see [`file`]). The field reference, with an example for
//! every field, is `docs/cluster.md` and the commented grids in `grids/`.
//!
//! - [`file`]: the TOML types, one per table;
//! - `build`: section by section validation and the expansion;
//! - `located`: byte offsets to line, column and field;
//! - [`env`]: `${VAR}` / `${VAR:-default}` in `data_root`, `storage.url`
//!   and model paths, read from the environment when the grid is loaded.
//!
//! Expansion resolves every cell's identity (`crate::content`): local models
//! and readable dataset files are hashed (cached on disk), so loading a grid
//! may read the files it names.

mod build;
pub mod env;
pub mod file;
mod located;

pub(crate) use file::GridFile;

use crate::spec::{TaskId, TaskSpec};
use crate::verified::DeviceKind;
use located::Located;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The only grid format version this build reads.
pub(crate) const GRID_VERSION: u32 = 1;

/// A grid that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The file could not be read.
    #[error("{file}: cannot read grid: {source}")]
    Io {
        /// The grid file.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A problem located in the file.
    #[error("{file}:{line}:{column}: `{field}`: {message}")]
    Invalid {
        /// The grid file (or `<string>` for grids parsed from memory).
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted path of the offending field (e.g. `models[2].name`).
        field: String,
        /// What was expected.
        message: String,
    },
}

/// Scheduling limits after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduling {
    /// Attempts before a task is marked failed (1 ..= [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// How long a lease lives without a heartbeat (at most [`MAX_LEASE_TTL_SECS`]).
    pub lease_ttl: Duration,
    /// How often workers heartbeat (less than `lease_ttl`).
    pub heartbeat_interval: Duration,
    /// A lease whose progress has not moved for this long is expired.
    pub stall_timeout: Duration,
    /// The same while the model loads (phase `load_model`).
    pub load_stall_timeout: Duration,
    /// Device kinds that may run the sweep's cells.
    pub devices: Vec<DeviceKind>,
}

/// A validated grid: everything the coordinator needs to serve the sweep.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Sweep name.
    pub sweep: String,
    /// Storage URL (after `${VAR}` expansion).
    pub storage_url: String,
    /// Scheduling limits.
    pub scheduling: Scheduling,
    /// One spec per cell, in expansion order (models as listed, then datasets,
    /// precisions, noise kinds, prompt modes, seeds).
    pub tasks: Vec<TaskSpec>,
}

impl Grid {
    /// Read, validate and expand a grid file.
    pub fn load(path: &Path) -> Result<Grid, GridError> {
        let text = std::fs::read_to_string(path).map_err(|source| GridError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Grid::parse(&text, path)
    }

    /// Validate and expand grid text; `file` is used in error messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Grid, GridError> {
        let loc = Located { text, file };
        let raw: GridFile = toml::from_str(text).map_err(|e| loc.toml(&e))?;
        build::build(&loc, raw)
    }

    /// The task ids of the grid, in expansion order.
    pub fn task_ids(&self) -> Vec<TaskId> {
        self.tasks.iter().map(TaskSpec::id).collect()
    }
}

/// A data root holding stand-in copies of the two datasets no manifest pins
/// (Sarcasm, IMDb), so that a grid naming them can be expanded where the real
/// data root (an S3 bucket in the deployment overlays) is out of reach. The
/// other datasets' identities come from their manifests' pins.
#[cfg(any(test, feature = "test-support"))]
pub fn unpinned_dataset_standins(dir: &Path) -> PathBuf {
    let root = dir.join("standin-data");
    std::fs::create_dir_all(&root).expect("create stand-in data root");
    std::fs::write(
        root.join("sarcasm.json"),
        "{\"headline\": \"stand-in\", \"is_sarcastic\": 1}\n",
    )
    .expect("write stand-in sarcasm.json");
    std::fs::write(
        root.join("imdb_test.jsonl"),
        "{\"text\": \"stand-in\", \"label\": 1}\n",
    )
    .expect("write stand-in imdb_test.jsonl");
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TaskKind;
    use std::collections::HashSet;

    const MINIMAL: &str = r#"
version = 1
sweep = "t"
data_root = "/data"
[storage]
url = "memory://"
[[models]]
name = "a"
size_b = 1.0
source = { kind = "hub", repo = "org/a" }
[axes]
datasets = ["cities", "coinflip"]
precisions = ["32", "16"]
"#;

    fn parse(text: &str) -> Result<Grid, GridError> {
        Grid::parse(text, Path::new("g.toml"))
    }

    fn invalid(text: &str) -> (usize, String, String) {
        match parse(text).unwrap_err() {
            GridError::Invalid {
                line,
                field,
                message,
                ..
            } => (line, field, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn minimal_grid_expands_with_defaults() {
        let g = parse(MINIMAL).unwrap();
        assert_eq!(g.tasks.len(), 4);
        assert_eq!(g.scheduling.max_attempts, 3);
        assert!(g
            .tasks
            .iter()
            .all(|t| t.noise == crate::datasets::NoiseKind::None
                && t.prompt_mode == crate::datasets::PromptMode::Paper
                && t.seed == 0));
        let ids: HashSet<_> = g.task_ids().into_iter().collect();
        assert_eq!(ids.len(), 4, "cells must have distinct ids");
    }

    #[test]
    fn unknown_key_is_located() {
        let text = MINIMAL.replace("[axes]", "[axes]\ncolour = 1");
        let (line, field, msg) = invalid(&text);
        assert_eq!(line, 12);
        assert_eq!(field, "colour");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn bad_probe_settings_fail_the_grid_at_the_probe_table() {
        let text = format!("{MINIMAL}[probe]\nc = 1.0\nsplit = \"holdout\"\n");
        let (line, field, _) = invalid(&text);
        assert_eq!((line, field.as_str()), (16, "split"));
        let text = format!("{MINIMAL}[probe]\nc = -1.0\n");
        let (line, field, msg) = invalid(&text);
        assert_eq!((line, field.as_str()), (14, "probe"));
        assert!(msg.contains("probe.c"), "{msg}");
        let good = format!("{MINIMAL}[probe]\nc = 0.5\nsplit = {{ kind = \"kfold\", k = 5 }}\n");
        assert_eq!(parse(&good).unwrap().tasks.len(), 4);
    }

    #[test]
    fn depth_and_split_settings_reach_every_probe_cell() {
        let text = format!(
            "{MINIMAL}[probe]\nsplit = {{ kind = \"sklearn\", test_size = 0.4, random_state = 42 }}\n[depth]\nrule = \"plateau\"\ntolerance = 0.02\nbootstrap = 200\n"
        );
        let g = parse(&text).unwrap();
        for t in &g.tasks {
            let depth = t.depth.as_ref().unwrap();
            assert_eq!(depth.rule, crate::depth::RuleName::Plateau);
            assert_eq!((depth.tolerance, depth.bootstrap), (0.02, 200));
            assert_eq!(t.probe.as_ref().unwrap().split.kind(), "sklearn");
        }
        let (_, field, msg) = invalid(&format!("{MINIMAL}[depth]\nconfidence = 2.0\n"));
        assert_eq!(field, "depth");
        assert!(msg.contains("confidence"), "{msg}");
        let (_, field, msg) = invalid(&format!(
            "{MINIMAL}[probe]\nsplit = {{ kind = \"grouped\" }}\n"
        ));
        assert_eq!(field, "probe.split");
        assert!(msg.contains("`coinflip` has none"), "{msg}");
    }

    #[test]
    fn unverified_precision_device_pairs_are_refused_naming_the_pair() {
        let cuda_only = MINIMAL.replace("[axes]", "[scheduling]\ndevices = [\"cuda\"]\n[axes]");
        let q8 = cuda_only.replace("precisions = [\"32\", \"16\"]", "precisions = [\"q8_0\"]");
        let (_, field, msg) = invalid(&q8);
        assert_eq!(field, "models[0] precision");
        assert!(msg.contains("`q8_0` on `cuda`"), "{msg}");
        // LLM.int8 is verified on CPUs only for now: fine when CPUs may run it.
        let int8 = MINIMAL.replace("precisions = [\"32\", \"16\"]", "precisions = [\"8\"]");
        assert_eq!(parse(&int8).unwrap().scheduling.devices.len(), 2);
        let (_, _, msg) =
            invalid(&int8.replace("[axes]", "[scheduling]\ndevices = [\"cuda\"]\n[axes]"));
        assert!(
            msg.contains("`8` on `cuda`") && msg.contains("run it on cpu"),
            "{msg}"
        );
    }

    #[test]
    fn extreme_values_are_refused_before_anything_runs() {
        for (section, field) in [
            (
                "[scheduling]\nlease_ttl_secs = 18446744073709551615\n",
                "scheduling.lease_ttl_secs",
            ),
            (
                "[scheduling]\nmax_attempts = 4000000000\n",
                "scheduling.max_attempts",
            ),
            (
                "[extraction]\nbatch_size = 100000000\n",
                "extraction.batch_size",
            ),
            ("[depth]\nbootstrap = 100000000\n", "depth"),
            (
                "[probe]\nsplit = { kind = \"kfold\", k = 100000 }\n",
                "probe",
            ),
        ] {
            let text = MINIMAL.replace("[axes]", &format!("{section}[axes]"));
            let (_, got, _) = invalid(&text);
            assert_eq!(got, field, "{section}");
        }
        let huge = MINIMAL.replace("\"coinflip\"", "\"coinflip_gen/99999999999\"");
        let (_, field, msg) = invalid(&huge);
        assert_eq!(field, "axes.datasets[1]");
        assert!(msg.contains("between 2 and"), "{msg}");
        let seeds: Vec<String> = (0..2000).map(|s| s.to_string()).collect();
        let many = MINIMAL.replace(
            "precisions = [\"32\", \"16\"]",
            &format!(
                "precisions = [\"32\", \"16\"]\nseeds = [{}]",
                seeds.join(", ")
            ),
        );
        let (_, field, _) = invalid(&many);
        assert_eq!(field, "axes.seeds");
    }

    #[test]
    fn unknown_dataset_and_source_kind() {
        let (line, field, msg) = invalid(&MINIMAL.replace("\"coinflip\"", "\"nope\""));
        assert_eq!((line, field.as_str()), (12, "axes.datasets[1]"));
        assert!(msg.contains("nope"), "{msg}");
        let (line, field, msg) = invalid(&MINIMAL.replace("kind = \"hub\"", "kind = \"ftp\""));
        assert_eq!((line, field.as_str()), (10, "models[0].source.kind"));
        assert!(msg.contains("unknown model source kind"));
    }

    #[test]
    fn duplicate_model_names_point_at_the_second() {
        let text = format!("{MINIMAL}[[models]]\nname = \"a\"\nsize_b = 2.0\nsource = {{ kind = \"hub\", repo = \"org/b\" }}\n");
        let (line, field, msg) = invalid(&text);
        assert_eq!((line, field.as_str()), (15, "models[1].name"));
        assert!(msg.contains("first defined on line 8"), "{msg}");
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let gguf = MINIMAL.replace(
            "kind = \"hub\", repo = \"org/a\"",
            "kind = \"gguf\", path = \"/m.gguf\"",
        );
        let (_, _, msg) = invalid(&gguf);
        assert!(msg.contains("impossible for a gguf model"), "{msg}");
        let mc = MINIMAL
            .replace("\"coinflip\"", "\"truthfulqa_mc\"")
            .replace("[axes]", "[extraction]\npooling = \"mean\"\n[axes]");
        let (_, field, msg) = invalid(&mc);
        assert_eq!(field, "axes.datasets[1]");
        assert!(msg.contains("pooling must be"), "{msg}");
        let (_, field, _) = invalid(&MINIMAL.replace(
            "[axes]",
            "[scheduling]\nlease_ttl_secs = 10\nheartbeat_interval_secs = 10\n[axes]",
        ));
        assert_eq!(field, "scheduling.heartbeat_interval_secs");
    }

    #[test]
    fn empty_grids_are_refused() {
        let no_models = MINIMAL.replace("[[models]]\nname = \"a\"\nsize_b = 1.0\nsource = { kind = \"hub\", repo = \"org/a\" }\n", "");
        let (_, field, _) = invalid(&no_models);
        assert_eq!(field, "models");
        let (_, field, _) = invalid(&MINIMAL.replace("[\"cities\", \"coinflip\"]", "[]"));
        assert_eq!(field, "axes.datasets");
    }

    #[test]
    fn version_must_be_one() {
        let (line, field, _) = invalid(&MINIMAL.replace("version = 1", "version = 2"));
        assert_eq!((line, field.as_str()), (2, "version"));
    }

    #[test]
    fn shipped_grids_are_valid() {
        // The full grid reads two datasets no manifest pins (sarcasm, IMDb):
        // give it a data root holding (stand-in) copies so they can be hashed.
        // The quickstart pins its model's content, so the file need not be here.
        let data = tempfile::tempdir().unwrap();
        std::fs::write(
            data.path().join("sarcasm.json"),
            "{\"headline\": \"a\", \"is_sarcastic\": 1}\n",
        )
        .unwrap();
        std::fs::write(
            data.path().join("imdb_test.jsonl"),
            "{\"text\": \"good\", \"label\": 1}\n",
        )
        .unwrap();
        std::env::set_var("CD_DATA_ROOT", data.path());
        std::env::set_var("CD_SMOLLM2_GGUF", data.path().join("absent.gguf"));
        std::env::set_var("CD_HASH_CACHE", data.path().join("hashes"));
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grids");
        let full = Grid::load(&root.join("full.toml")).unwrap();
        assert_eq!(full.tasks.len(), 972);
        let ids: HashSet<_> = full.task_ids().into_iter().collect();
        assert_eq!(ids.len(), 972);
        let llama = Grid::load(&root.join("llama-analysis.toml")).unwrap();
        assert!(llama
            .tasks
            .iter()
            .all(|t| t.kind == TaskKind::MultipleChoice));
        let quick = Grid::load(&root.join("quickstart.toml")).unwrap();
        assert!(!quick.tasks.is_empty());
    }
}
