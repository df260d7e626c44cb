//! From a parsed [`GridFile`] to a validated [`Grid`]: one function per
//! section, then the cross product of models and axes into resolved
//! [`TaskSpec`]s. Every error points at the field at fault.
//!
//! Why this file is long: one builder per grid section, each short; they share
//! the located-error helpers and run in the order the file reads.

use super::env::expand_env;
use super::file::{AxesSection, GridFile, ModelEntry, SchedulingSection};
use super::located::Located;
use super::{Grid, GridError, Scheduling, GRID_VERSION};
use crate::content::{self, ContentError};
use crate::datasets::{self, DatasetKind, NoiseKind, PromptMode};
use crate::depth::DepthConfig;
use crate::probe::mc::McConfig;
use crate::probe::ProbeConfig;
use crate::spec::{
    DatasetIdentity, DatasetRef, ModelIdentity, ModelRef, ModelSource, Pooling, Precision,
    TaskKind, TaskSpec, MAX_BATCH, SPEC_SCHEMA,
};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// Most attempts a task may be given.
pub(crate) const MAX_ATTEMPTS: u32 = 100;
/// Longest lease, in seconds (one day).
pub(crate) const MAX_LEASE_TTL_SECS: u64 = 86_400;
/// Most seeds one grid may list.
pub(crate) const MAX_SEEDS: usize = 1_000;
/// Most cells one grid may expand to.
pub(crate) const MAX_TASKS: usize = 1_000_000;
/// Largest model size a grid may declare, in billions of parameters.
pub(crate) const MAX_SIZE_B: f64 = 10_000.0;

/// A dataset of the grid with what every cell of it shares.
struct GridDataset {
    name: String,
    kind: TaskKind,
    identity: DatasetIdentity,
}

/// A model of the grid, resolved.
struct GridModel {
    model: ModelRef,
    precisions: Vec<Precision>,
}

/// Validate a parsed grid and expand it.
pub(super) fn build(loc: &Located<'_>, raw: GridFile) -> Result<Grid, GridError> {
    if *raw.version.get_ref() != GRID_VERSION {
        return Err(loc.err(
            &raw.version,
            "version",
            format!(
                "unsupported grid version {}: this build reads version {GRID_VERSION}",
                raw.version.get_ref()
            ),
        ));
    }
    let sweep = sweep_name(loc, &raw.sweep)?;
    let data_root = expand(loc, &raw.data_root, "data_root")?;
    let storage_url = expand(loc, &raw.storage.url, "storage.url")?;
    if !["file://", "s3://", "memory://"]
        .iter()
        .any(|p| storage_url.starts_with(p))
    {
        return Err(loc.err(
            &raw.storage.url,
            "storage.url",
            "expected a file://, s3:// or memory:// URL",
        ));
    }
    let scheduling = scheduling(loc, &raw.scheduling)?;
    let ex = &raw.extraction;
    let (site, pooling) = (*ex.site.get_ref(), *ex.pooling.get_ref());
    let batch_size = *ex.batch_size.get_ref();
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(loc.err(
            &ex.batch_size,
            "extraction.batch_size",
            format!("must be between 1 and {MAX_BATCH}"),
        ));
    }
    let probe = settings(loc, &raw.probe, "probe", |p: &ProbeConfig| {
        p.validate().map_err(|e| e.to_string())
    })?;
    let depth = settings(loc, &raw.depth, "depth", DepthConfig::validate)?;
    let mc = settings(loc, &raw.mc, "mc", McConfig::validate)?;

    let axes = &raw.axes;
    let grid_datasets = datasets(loc, &raw, &data_root, pooling)?;
    for d in &grid_datasets {
        if probe.split.needs_groups() && d.kind == TaskKind::Probe {
            let (manifest, _) =
                datasets::find(&d.name).map_err(|e| loc.at(0, "axes.datasets", &e.to_string()))?;
            let grouped = manifest
                .source
                .as_ref()
                .is_some_and(|s| s.group_field.is_some());
            if !grouped {
                return Err(loc.at(
                    loc.header("probe"),
                    "probe.split",
                    &format!(
                        "a grouped split needs datasets whose examples have groups; `{}` has none (cities, counterfact and cities_gen do)",
                        d.name
                    ),
                ));
            }
        }
    }
    let precisions = precisions(
        loc,
        nonempty(loc, &axes.precisions, "axes.precisions")?,
        "axes.precisions",
    )?;
    let noises = noises(loc, axes)?;
    let modes = prompt_modes(loc, axes)?;
    let seeds = seeds(loc, axes)?;
    let models = models(loc, &raw.models, &precisions)?;
    for (mi, m) in models.iter().enumerate() {
        for &p in &m.precisions {
            let runnable = scheduling
                .devices
                .iter()
                .any(|&d| crate::verified::is_verified(p, d));
            if !runnable {
                let why: Vec<String> = scheduling
                    .devices
                    .iter()
                    .filter_map(|&d| crate::verified::check(p, d).err())
                    .collect();
                return Err(loc.err(
                    &raw.models[mi].name,
                    &format!("models[{mi}] precision"),
                    why.join("; "),
                ));
            }
        }
    }

    let n_tasks = models.iter().map(|m| m.precisions.len()).sum::<usize>()
        * grid_datasets.len()
        * noises.len()
        * modes.len()
        * seeds.len();
    if n_tasks > MAX_TASKS {
        return Err(loc.at(
            0,
            "axes",
            &format!("the grid expands to {n_tasks} cells; at most {MAX_TASKS} are allowed: split it into several sweeps"),
        ));
    }
    let mut tasks = Vec::with_capacity(n_tasks);
    // Noise and prompt modes shape a probe dataset's texts; a multiple-choice
    // dataset has its own prompt format and no noise, so its cells run once,
    // without noise and with its own prompt, whatever these axes list.
    let mc_noise = [NoiseKind::None];
    let mc_modes = [PromptMode::Paper];
    for m in &models {
        for d in &grid_datasets {
            let (noises, modes): (&[NoiseKind], &[PromptMode]) = match d.kind {
                TaskKind::Probe => (&noises, &modes),
                TaskKind::MultipleChoice => (&mc_noise, &mc_modes),
            };
            for &precision in &m.precisions {
                for noise in noises {
                    for &prompt_mode in modes {
                        for &seed in &seeds {
                            let (probe, depth, mc) = match d.kind {
                                TaskKind::Probe => (Some(probe.clone()), Some(depth.clone()), None),
                                TaskKind::MultipleChoice => (None, None, Some(mc.clone())),
                            };
                            tasks.push(TaskSpec {
                                schema: SPEC_SCHEMA,
                                sweep: sweep.clone(),
                                kind: d.kind,
                                model: m.model.clone(),
                                dataset: DatasetRef {
                                    name: d.name.clone(),
                                    identity: d.identity.clone(),
                                },
                                data_root: data_root.clone(),
                                precision,
                                noise: *noise,
                                prompt_mode,
                                site,
                                pooling,
                                seed,
                                probe,
                                depth,
                                mc,
                                batch_size,
                                upload_features: raw.storage.upload_features,
                            });
                        }
                    }
                }
            }
        }
    }
    // The grid validates by resolving: every cell it hands out is one a
    // worker's `TaskSpec::resolve` accepts.
    for task in &tasks {
        task.resolve().map_err(|e| {
            loc.at(
                0,
                "axes",
                &format!("cell {} ({}): {e}", task.id(), task.dataset.name),
            )
        })?;
    }
    Ok(Grid {
        sweep,
        storage_url,
        scheduling,
        tasks,
    })
}

fn expand(loc: &Located<'_>, s: &Spanned<String>, field: &str) -> Result<String, GridError> {
    expand_env(s.get_ref(), |k| std::env::var(k).ok()).map_err(|m| loc.err(s, field, m))
}

fn sweep_name(loc: &Located<'_>, s: &Spanned<String>) -> Result<String, GridError> {
    let sweep = s.get_ref();
    let ok = !sweep.is_empty()
        && sweep.len() <= 128
        && sweep
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !sweep.starts_with('.');
    if !ok {
        return Err(loc.err(
            s,
            "sweep",
            "expected a name of 1 to 128 letters, digits, `-`, `_` or `.` (not starting with `.`)",
        ));
    }
    Ok(sweep.clone())
}

fn scheduling(loc: &Located<'_>, sch: &SchedulingSection) -> Result<Scheduling, GridError> {
    let attempts = *sch.max_attempts.get_ref();
    if !(1..=MAX_ATTEMPTS).contains(&attempts) {
        return Err(loc.err(
            &sch.max_attempts,
            "scheduling.max_attempts",
            format!("must be between 1 and {MAX_ATTEMPTS}"),
        ));
    }
    let ttl = *sch.lease_ttl_secs.get_ref();
    if !(1..=MAX_LEASE_TTL_SECS).contains(&ttl) {
        return Err(loc.err(
            &sch.lease_ttl_secs,
            "scheduling.lease_ttl_secs",
            format!("must be between 1 and {MAX_LEASE_TTL_SECS} seconds (one day)"),
        ));
    }
    let beat = *sch.heartbeat_interval_secs.get_ref();
    if beat == 0 || beat >= ttl {
        return Err(loc.err(
            &sch.heartbeat_interval_secs,
            "scheduling.heartbeat_interval_secs",
            "must be at least 1 and shorter than lease_ttl_secs, or leases lapse between heartbeats",
        ));
    }
    let stall = *sch.stall_timeout_secs.get_ref();
    if !(60..=MAX_LEASE_TTL_SECS).contains(&stall) || stall <= beat {
        return Err(loc.err(
            &sch.stall_timeout_secs,
            "scheduling.stall_timeout_secs",
            format!("must be between 60 and {MAX_LEASE_TTL_SECS} seconds and longer than heartbeat_interval_secs"),
        ));
    }
    let load_stall = *sch.load_stall_timeout_secs.get_ref();
    if !(60..=MAX_LEASE_TTL_SECS).contains(&load_stall) || load_stall <= beat {
        return Err(loc.err(
            &sch.load_stall_timeout_secs,
            "scheduling.load_stall_timeout_secs",
            format!("must be between 60 and {MAX_LEASE_TTL_SECS} seconds and longer than heartbeat_interval_secs"),
        ));
    }
    let devices = sch.devices.get_ref();
    if devices.is_empty() {
        return Err(loc.err(
            &sch.devices,
            "scheduling.devices",
            "must list at least one of cpu, cuda",
        ));
    }
    Ok(Scheduling {
        max_attempts: attempts,
        lease_ttl: Duration::from_secs(ttl),
        heartbeat_interval: Duration::from_secs(beat),
        stall_timeout: Duration::from_secs(stall),
        load_stall_timeout: Duration::from_secs(load_stall),
        devices: devices.clone(),
    })
}

/// A settings table with its default when absent, checked by `check`.
fn settings<T: Clone + Default>(
    loc: &Located<'_>,
    table: &Option<Spanned<T>>,
    name: &str,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, GridError> {
    let value = table
        .as_ref()
        .map(|t| t.get_ref().clone())
        .unwrap_or_default();
    check(&value).map_err(|m| {
        let offset = table
            .as_ref()
            .map_or_else(|| loc.header(name), |t| t.span().start);
        loc.at(offset, name, &m)
    })?;
    Ok(value)
}

fn nonempty<'v, T>(
    loc: &Located<'_>,
    list: &'v Spanned<Vec<Spanned<T>>>,
    field: &str,
) -> Result<&'v [Spanned<T>], GridError> {
    if list.get_ref().is_empty() {
        return Err(loc.err(list, field, "must list at least one value"));
    }
    Ok(list.get_ref())
}

fn datasets(
    loc: &Located<'_>,
    raw: &GridFile,
    data_root: &str,
    pooling: Pooling,
) -> Result<Vec<GridDataset>, GridError> {
    let listed = nonempty(loc, &raw.axes.datasets, "axes.datasets")?;
    let mut out: Vec<GridDataset> = Vec::new();
    let mut used_pins = HashSet::new();
    for (i, d) in listed.iter().enumerate() {
        let field = format!("axes.datasets[{i}]");
        let (manifest, name) =
            datasets::check_name(d.get_ref()).map_err(|e| loc.err(d, &field, e.to_string()))?;
        if out.iter().any(|o| o.name == name) {
            return Err(loc.err(d, &field, format!("dataset `{name}` is listed twice")));
        }
        let kind = match manifest.kind {
            DatasetKind::Binary => TaskKind::Probe,
            DatasetKind::MultipleChoice => TaskKind::MultipleChoice,
        };
        if kind == TaskKind::MultipleChoice && pooling == Pooling::Mean {
            return Err(loc.err(
                d,
                &field,
                "multiple-choice datasets score token log-probabilities, so extraction.pooling must be \"last\"",
            ));
        }
        let pins = raw.datasets.get(&manifest.name);
        if pins.is_some() {
            used_pins.insert(manifest.name.clone());
        }
        if let Some(p) = pins {
            for (k, sha) in p.get_ref().sha256.iter().enumerate() {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(loc.err(
                        p,
                        &format!("datasets.{}.sha256[{k}]", manifest.name),
                        format!("`{sha}` is not a SHA-256 (64 hex digits)"),
                    ));
                }
            }
        }
        let identity = content::dataset_identity(
            &name,
            data_root,
            pins.map(|p| p.get_ref().sha256.as_slice()),
        )
        .map_err(|e| loc.err(d, &field, e.to_string()))?;
        out.push(GridDataset {
            name,
            kind,
            identity,
        });
    }
    if let Some((name, pin)) = raw.datasets.iter().find(|(n, _)| !used_pins.contains(*n)) {
        return Err(loc.err(
            pin,
            &format!("datasets.{name}"),
            format!("pins dataset `{name}`, which axes.datasets does not list"),
        ));
    }
    Ok(out)
}

fn precisions(
    loc: &Located<'_>,
    list: &[Spanned<String>],
    field: &str,
) -> Result<Vec<Precision>, GridError> {
    let mut out: Vec<Precision> = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let parsed: Precision = p
            .get_ref()
            .parse()
            .map_err(|m: String| loc.err(p, &format!("{field}[{i}]"), m))?;
        if out.contains(&parsed) {
            return Err(loc.err(
                p,
                &format!("{field}[{i}]"),
                format!("precision `{parsed}` is listed twice"),
            ));
        }
        out.push(parsed);
    }
    Ok(out)
}

fn noises(loc: &Located<'_>, axes: &AxesSection) -> Result<Vec<NoiseKind>, GridError> {
    let mut out: Vec<NoiseKind> = Vec::new();
    for (i, n) in nonempty(loc, &axes.noise, "axes.noise")?.iter().enumerate() {
        let field = format!("axes.noise[{i}]");
        let noise = NoiseKind::parse(n.get_ref()).map_err(|e| loc.err(n, &field, e.to_string()))?;
        if out.iter().any(|o| o.name() == noise.name()) {
            return Err(loc.err(n, &field, format!("noise `{noise}` is listed twice")));
        }
        out.push(noise);
    }
    Ok(out)
}

fn prompt_modes(loc: &Located<'_>, axes: &AxesSection) -> Result<Vec<PromptMode>, GridError> {
    let mut out = Vec::new();
    for (i, m) in nonempty(loc, &axes.prompt_modes, "axes.prompt_modes")?
        .iter()
        .enumerate()
    {
        if out.contains(m.get_ref()) {
            return Err(loc.err(
                m,
                &format!("axes.prompt_modes[{i}]"),
                format!("`{}` is listed twice", m.get_ref().as_str()),
            ));
        }
        out.push(*m.get_ref());
    }
    Ok(out)
}

fn seeds(loc: &Located<'_>, axes: &AxesSection) -> Result<Vec<u64>, GridError> {
    let seeds = axes.seeds.get_ref();
    if seeds.is_empty() {
        return Err(loc.err(&axes.seeds, "axes.seeds", "must list at least one seed"));
    }
    if seeds.len() > MAX_SEEDS {
        return Err(loc.err(
            &axes.seeds,
            "axes.seeds",
            format!(
                "lists {} seeds; at most {MAX_SEEDS} are allowed",
                seeds.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(s) = seeds.iter().find(|s| !seen.insert(**s)) {
        return Err(loc.err(
            &axes.seeds,
            "axes.seeds",
            format!("seed {s} is listed twice"),
        ));
    }
    Ok(seeds.clone())
}

fn models(
    loc: &Located<'_>,
    entries: &[ModelEntry],
    grid_precisions: &[Precision],
) -> Result<Vec<GridModel>, GridError> {
    if entries.is_empty() {
        return Err(loc.at(
            0,
            "models",
            "the grid lists no models: add at least one [[models]] table",
        ));
    }
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (mi, m) in entries.iter().enumerate() {
        let name = m.name.get_ref();
        if name.trim().is_empty() {
            return Err(loc.err(&m.name, &format!("models[{mi}].name"), "must not be empty"));
        }
        if let Some(first) = names.insert(name.clone(), m.name.span().start) {
            return Err(loc.err(
                &m.name,
                &format!("models[{mi}].name"),
                format!(
                    "duplicate model name `{name}` (first defined on line {})",
                    loc.line(first)
                ),
            ));
        }
        let size_b = *m.size_b.get_ref();
        if !(size_b.is_finite() && size_b > 0.0 && size_b <= MAX_SIZE_B) {
            return Err(loc.err(
                &m.size_b,
                &format!("models[{mi}].size_b"),
                format!("must be a number of billions in (0, {MAX_SIZE_B}]"),
            ));
        }
        let (source, pinned) = source(loc, &m.source, mi)?;
        let model_precisions = match &m.precisions {
            Some(list) => {
                let field = format!("models[{mi}].precisions");
                if list.is_empty() {
                    return Err(loc.err(&m.name, &field, "must list at least one precision"));
                }
                precisions(loc, list, &field)?
            }
            None => grid_precisions.to_vec(),
        };
        if let ModelSource::Gguf { .. } = source {
            if let Some(p) = model_precisions.iter().find(|p| !gguf_precision_ok(**p)) {
                return Err(loc.err(
                    &m.source,
                    &format!("models[{mi}] precision"),
                    format!("precision `{p}` is impossible for a gguf model: its weights keep the file's own quantisation; use \"32\""),
                ));
            }
        }
        let identity = model_identity(&source, pinned)
            .map_err(|e| loc.err(&m.source, &format!("models[{mi}].source"), e))?;
        out.push(GridModel {
            model: ModelRef {
                name: name.clone(),
                source,
                size_b,
                identity,
            },
            precisions: model_precisions,
        });
    }
    Ok(out)
}

/// Whether a precision can run a model from a GGUF file.
///
/// A GGUF file carries its own (usually quantised) weights; re-casting them
/// to bf16/f16 or re-quantising them would measure something other than the
/// file, so GGUF models run at `32` only (weights as stored, f32 activations).
fn gguf_precision_ok(p: Precision) -> bool {
    p == Precision::F32
}

/// The identity of a model: its Hub repository and revision, or the content
/// of its local files (hashed here, or pinned by the grid's `sha256`).
fn model_identity(source: &ModelSource, pinned: Option<String>) -> Result<ModelIdentity, String> {
    if let Some(identity) = source.hub_identity() {
        return Ok(identity);
    }
    let path = match source {
        ModelSource::Dir { path } | ModelSource::Gguf { path } => Path::new(path),
        ModelSource::Hub { .. } => unreachable!("handled above"),
    };
    if path.exists() {
        let sha256 = content::model_sha256(path).map_err(|e: ContentError| e.to_string())?;
        if let Some(pin) = pinned.filter(|p| *p != sha256) {
            return Err(format!(
                "`{}` has SHA-256 {sha256}, but the grid pins sha256 = \"{pin}\"",
                path.display()
            ));
        }
        return Ok(ModelIdentity::Content { sha256 });
    }
    match pinned {
        Some(sha256) => Ok(ModelIdentity::Content { sha256 }),
        None => Err(format!(
            "`{}` is not readable here, so its content (the cells' identity) is unknown: run the coordinator where the file is readable, or add sha256 = \"<sha256sum of the file>\" to the source",
            path.display()
        )),
    }
}

/// A `source = { kind = ..., ... }` table: the source and any content pin.
fn source(
    loc: &Located<'_>,
    table: &Spanned<toml::Table>,
    mi: usize,
) -> Result<(ModelSource, Option<String>), GridError> {
    let field = format!("models[{mi}].source");
    let t = table.get_ref();
    let kind = t.get("kind").and_then(toml::Value::as_str).ok_or_else(|| {
        loc.err(
            table,
            &format!("{field}.kind"),
            "missing `kind`: expected one of dir, hub, gguf",
        )
    })?;
    let string = |key: &str| -> Result<String, GridError> {
        let v = t.get(key).and_then(toml::Value::as_str).ok_or_else(|| {
            loc.err(
                table,
                &format!("{field}.{key}"),
                format!("a `{kind}` source needs a string `{key}`"),
            )
        })?;
        expand_env(v, |k| std::env::var(k).ok())
            .map_err(|m| loc.err(table, &format!("{field}.{key}"), m))
    };
    let allowed: &[&str] = match kind {
        "dir" | "gguf" => &["kind", "path", "sha256"],
        "hub" => &["kind", "repo", "revision"],
        other => {
            return Err(loc.err(
                table,
                &format!("{field}.kind"),
                format!("unknown model source kind `{other}`: expected dir, hub or gguf"),
            ))
        }
    };
    if let Some(extra) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(loc.err(
            table,
            &format!("{field}.{extra}"),
            format!(
                "unknown key `{extra}` for a `{kind}` source: expected {}",
                allowed.join(", ")
            ),
        ));
    }
    let pinned = if t.contains_key("sha256") {
        let sha = string("sha256")?.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(loc.err(
                table,
                &format!("{field}.sha256"),
                format!("`{sha}` is not a SHA-256 (64 hex digits)"),
            ));
        }
        Some(sha)
    } else {
        None
    };
    let source = match kind {
        "dir" => ModelSource::Dir {
            path: string("path")?,
        },
        "gguf" => {
            let path = string("path")?;
            if !path.ends_with(".gguf") {
                return Err(loc.err(
                    table,
                    &format!("{field}.path"),
                    format!("`{path}` is not a .gguf file"),
                ));
            }
            ModelSource::Gguf { path }
        }
        _ => {
            let repo = string("repo")?;
            if repo.split('/').count() != 2 || repo.starts_with('/') || repo.ends_with('/') {
                return Err(loc.err(
                    table,
                    &format!("{field}.repo"),
                    format!("`{repo}` is not a hub id `org/name`"),
                ));
            }
            let revision = if t.contains_key("revision") {
                Some(string("revision")?)
            } else {
                None
            };
            ModelSource::Hub { repo, revision }
        }
    };
    Ok((source, pinned))
}
