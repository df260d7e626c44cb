//! Loading a model from where a [`ModelSource`] says it lives: an HF-format
//! directory, an HF Hub repository (through the Hub cache), or a single GGUF
//! file.
//!
//! Loading is two steps so that device placement can look at the model first:
//! [`open_model`] resolves files, parses the configuration and tokenizer and
//! memory-maps (or, for GGUF, dequantizes) the weights; [`ModelFiles::build`]
//! then builds the network on a [`DeviceMap`]. [`load_model`] does both.
//!
//! Every failure names the file and what was expected: a missing
//! `config.json` or `tokenizer.json`, an unsupported architecture (with the
//! `architectures` / `model_type` found), a truncated or corrupt weights file,
//! a tensor absent from the weights (named, with the files searched).
//!
//! Why this file is long: one loader per model source (HF directory, Hub repo,
//! single GGUF) sharing the same file checks and error messages.

use super::gguf::read_gguf;
use super::hub::{HubOptions, HubRepo};
use super::{DeviceMap, EngineError, Model, ModelConfig, Precision};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use cd_common::spec::ModelSource;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Numeric precision to run in.
    pub precision: Precision,
    /// The device everything goes on, unless `device_map` is given.
    pub device: Device,
    /// Explicit placement of embeddings, layers and head.
    pub device_map: Option<DeviceMap>,
    /// Hub sources: resolve from the cache only, never use the network
    /// (`HF_HUB_OFFLINE=1` has the same effect).
    pub offline: bool,
    /// Hub sources: the Hub cache directory (default per `HF_HUB_CACHE` /
    /// `HF_HOME`, see [`super::hub`]).
    pub cache_dir: Option<PathBuf>,
    /// Hub sources: a revision overriding the one in the source.
    pub revision: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            precision: Precision::F32,
            device: Device::Cpu,
            device_map: None,
            offline: false,
            cache_dir: None,
            revision: None,
        }
    }
}

/// Where the weights are, before the network is built.
enum Weights {
    /// Memory-mapped safetensors files.
    Mmap {
        files: Vec<PathBuf>,
        st: MmapedSafetensors,
    },
    /// Tensors already in memory (dequantized GGUF).
    InMemory {
        file: PathBuf,
        tensors: HashMap<String, Tensor>,
    },
}

/// A resolved model: configuration, tokenizer and weights, not yet on devices.
pub struct ModelFiles {
    /// The parsed configuration.
    pub config: ModelConfig,
    /// The tokenizer.
    pub tokenizer: tokenizers::Tokenizer,
    /// The configuration document as an HF `config.json` (rebuilt for GGUF),
    /// for placement planning.
    pub config_json: serde_json::Value,
    /// The file the configuration came from (GGUF: the `.gguf` itself).
    pub config_path: PathBuf,
    weights: Weights,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parse a config, adding the `architectures` list to an unknown-architecture error.
fn parse_config(text: &str, path: &Path) -> Result<ModelConfig, EngineError> {
    ModelConfig::from_hf_config_json(text, path).map_err(|e| match e {
        EngineError::UnknownArchitecture {
            path,
            found,
            expected,
        } => {
            let archs = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("architectures").cloned())
                .map(|a| a.to_string())
                .unwrap_or_else(|| "none".into());
            EngineError::UnknownArchitecture {
                path,
                found: format!("model_type `{found}`, architectures {archs}"),
                expected,
            }
        }
        other => other,
    })
}

fn load_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer, EngineError> {
    tokenizers::Tokenizer::from_file(path).map_err(|e| {
        format_err(
            path,
            format!("not a readable tokenizer.json (expected an HF fast tokenizer file): {e}"),
        )
    })
}

/// Check and memory-map safetensors files.
fn mmap_safetensors(files: Vec<PathBuf>) -> Result<Weights, EngineError> {
    for f in &files {
        let meta = std::fs::metadata(f).map_err(io_err(f))?;
        if !meta.is_file() {
            return Err(format_err(f, "expected a safetensors weights file"));
        }
        // SAFETY: the file is mapped read-only; like every mmap-based loader we
        // rely on it not being modified while the model is alive.
        unsafe { MmapedSafetensors::new(f) }.map_err(|e| {
            format_err(
                f,
                format!("not a readable safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
    }
    // SAFETY: as above.
    let st = unsafe { MmapedSafetensors::multi(&files) }
        .map_err(|e| format_err(&files[0], format!("cannot map weights: {e}")))?;
    Ok(Weights::Mmap { files, st })
}

/// Shard files named by a `model.safetensors.index.json`, in a stable order.
fn shards_from_index(
    index: &Path,
    resolve: &dyn Fn(&str) -> Result<PathBuf, EngineError>,
) -> Result<Vec<PathBuf>, EngineError> {
    let text = std::fs::read_to_string(index).map_err(io_err(index))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format_err(index, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            format_err(
                index,
                "field `weight_map`: missing, expected an object of tensor -> shard file",
            )
        })?;
    let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
    if names.is_empty() {
        return Err(format_err(
            index,
            "field `weight_map`: names no shard files",
        ));
    }
    // Shards live beside the index: a name with a path in it could make the
    // loader read (or, from the Hub, fetch) any file.
    if let Some(bad) = names
        .iter()
        .find(|n| n.is_empty() || n.contains('/') || n.contains('\\') || **n == "." || **n == "..")
    {
        return Err(format_err(
            index,
            format!(
                "field `weight_map`: shard `{bad}` points outside the model directory: expected a file name beside the index"
            ),
        ));
    }
    names.into_iter().map(resolve).collect()
}

fn open_dir(dir: &Path) -> Result<ModelFiles, EngineError> {
    if !dir.is_dir() {
        return Err(format_err(
            dir,
            "not a directory: expected an HF-format model directory",
        ));
    }
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format_err(
                &config_path,
                "missing: an HF-format model directory needs config.json",
            )
        } else {
            EngineError::Io {
                path: config_path.clone(),
                source: e,
            }
        }
    })?;
    let config = parse_config(&text, &config_path)?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(format_err(
            &tok_path,
            "missing: the model directory needs a tokenizer.json (HF fast tokenizer); \
             save one with `AutoTokenizer.from_pretrained(...).save_pretrained(dir)`",
        ));
    }
    let tokenizer = load_tokenizer(&tok_path)?;
    let index = dir.join("model.safetensors.index.json");
    let single = dir.join("model.safetensors");
    let files = if index.is_file() {
        shards_from_index(&index, &|name| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format_err(
                    &p,
                    format!("missing: shard named by {}", index.display()),
                ))
            }
        })?
    } else if single.is_file() {
        vec![single]
    } else {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(format_err(
                dir,
                "no weights: expected model.safetensors or model.safetensors.index.json with its shards \
                 (PyTorch .bin checkpoints are not supported)",
            ));
        }
        found
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        config_json: serde_json::from_str(&text).unwrap_or_default(),
        config_path,
        weights: mmap_safetensors(files)?,
    })
}

fn open_hub(
    repo: &str,
    revision: Option<&str>,
    opts: &LoadOptions,
) -> Result<ModelFiles, EngineError> {
    let hub = HubRepo::new(
        repo,
        opts.revision.as_deref().or(revision),
        &HubOptions {
            offline: opts.offline,
            cache_dir: opts.cache_dir.clone(),
        },
    )?;
    let config_path = hub.get("config.json")?;
    let text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
    let config = parse_config(&text, &config_path)?;
    let tokenizer = load_tokenizer(&hub.get("tokenizer.json")?)?;
    let files = match hub.get_optional("model.safetensors.index.json")? {
        Some(index) => shards_from_index(&index, &|name| hub.get(name))?,
        None => vec![hub.get("model.safetensors")?],
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        config_json: serde_json::from_str(&text).unwrap_or_default(),
        config_path,
        weights: mmap_safetensors(files)?,
    })
}

fn open_gguf(path: &Path, precision: Precision) -> Result<ModelFiles, EngineError> {
    if !path.is_file() {
        return Err(format_err(path, "no such GGUF file"));
    }
    // Store dequantized weights in the dtype they will run in, to halve memory in 16-bit.
    let dtype = match precision {
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
        Precision::F32 | Precision::Int8 | Precision::Q8_0 => DType::F32,
    };
    let g = read_gguf(path, dtype)?;
    let config = parse_config(&g.config_json.to_string(), path)?;
    Ok(ModelFiles {
        config,
        tokenizer: g.tokenizer,
        config_json: g.config_json,
        config_path: path.to_path_buf(),
        weights: Weights::InMemory {
            file: path.to_path_buf(),
            tensors: g.tensors,
        },
    })
}

/// Resolve a model's files and parse its configuration and tokenizer.
pub fn open_model(source: &ModelSource, opts: &LoadOptions) -> Result<ModelFiles, EngineError> {
    match source {
        ModelSource::Dir { path } => open_dir(Path::new(path)),
        ModelSource::Hub { repo, revision } => open_hub(repo, revision.as_deref(), opts),
        ModelSource::Gguf { path } => open_gguf(Path::new(path), opts.precision),
    }
}

/// Load a model: [`open_model`] then [`ModelFiles::build`] on the options'
/// device map (or everything on `opts.device`).
pub fn load_model(source: &ModelSource, opts: &LoadOptions) -> Result<Model, EngineError> {
    let files = open_model(source, opts)?;
    let devices = match &opts.device_map {
        Some(map) => map.clone(),
        None => DeviceMap::single(opts.device.clone(), files.config.num_layers),
    };
    files.build(opts.precision, devices)
}

impl ModelFiles {
    /// A short description of where the weights are, for errors and logs.
    pub(crate) fn weights_description(&self) -> String {
        match &self.weights {
            Weights::Mmap { files, .. } => describe_files(files),
            Weights::InMemory { file, .. } => file.display().to_string(),
        }
    }

    /// Build the network on `devices`.
    pub fn build(self, precision: Precision, devices: DeviceMap) -> Result<Model, EngineError> {
        let what = self.weights_description();
        let backend: Box<dyn SimpleBackend> = match self.weights {
            Weights::Mmap { st, .. } => Box::new(Described {
                inner: ReleaseAfterCopy(st),
                what,
            }),
            Weights::InMemory { tensors, .. } => Box::new(Described {
                inner: HandOutOnce::new(tensors),
                what,
            }),
        };
        let vb = VarBuilder::from_backend(backend, DType::F32, devices.embed.clone());
        Model::new(self.config, vb, self.tokenizer, precision, devices)
    }
}

fn describe_files(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => {
            let dir = many[0]
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("{} shards in {dir}", many.len())
        }
    }
}

/// Mapped safetensors whose pages leave the process once a tensor is copied.
///
/// candle copies every tensor out of the mapping (into host memory or onto a
/// device), so without this the mapped pages a load touched stay resident
/// beside the copies and peak memory is twice the weights. Releasing each
/// tensor's pages right after its copy keeps the peak at the weights plus
/// one tensor; the file stays in the page cache, and a tensor read twice
/// (tied embeddings) is simply paged in again.
struct ReleaseAfterCopy(MmapedSafetensors);

impl ReleaseAfterCopy {
    fn release(&self, name: &str) {
        if let Ok(view) = self.0.get(name) {
            release_pages(view.data());
        }
    }
}

/// Drop the whole pages inside `bytes` (a read-only file mapping) from this
/// process's resident set; their contents stay readable from the file.
#[cfg(unix)]
fn release_pages(bytes: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
    let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside a live read-only shared file
        // mapping; MADV_DONTNEED there only drops resident pages, and a later
        // read faults the same bytes back in from the file. A failure (an
        // unusual kernel) leaves the pages resident, which is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(unix))]
fn release_pages(_: &[u8]) {}

impl SimpleBackend for ReleaseAfterCopy {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = SimpleBackend::get(&self.0, s, name, h, dtype, dev)?;
        self.release(name);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = SimpleBackend::get_unchecked(&self.0, name, dtype, dev)?;
        self.release(name);
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        SimpleBackend::contains_tensor(&self.0, name)
    }
}

/// In-memory tensors given away on first request.
///
/// The network keeps what it is handed (or a packed or quantized copy of it),
/// so the map's own reference would only keep a second copy of every weight
/// alive until the build ends. Each tensor is requested once (tied
/// embeddings reuse the embedding tensor); a second request is an error
/// rather than a silent copy.
struct HandOutOnce {
    tensors: std::sync::Mutex<HashMap<String, Tensor>>,
    names: BTreeSet<String>,
}

impl HandOutOnce {
    fn new(tensors: HashMap<String, Tensor>) -> Self {
        HandOutOnce {
            names: tensors.keys().cloned().collect(),
            tensors: std::sync::Mutex::new(tensors),
        }
    }

    fn take(&self, name: &str) -> candle_core::Result<Tensor> {
        let mut map = self
            .tensors
            .lock()
            .map_err(|_| candle_core::Error::Msg("weights map poisoned".into()))?;
        map.remove(name).ok_or_else(|| {
            candle_core::Error::Msg(format!("tensor `{name}` was already handed out once"))
        })
    }
}

impl SimpleBackend for HandOutOnce {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.take(name)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        t.to_device(dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name)?.to_device(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// A weights backend whose errors say which files were searched.
struct Described<B> {
    inner: B,
    what: String,
}

impl<B: SimpleBackend> SimpleBackend for Described<B> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if !self.inner.contains_tensor(name) {
            return Err(candle_core::Error::Msg(format!(
                "not found in {}: expected a tensor of shape {:?}",
                self.what,
                s.dims()
            )));
        }
        self.inner
            .get(s, name, h, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(format!("in {}: {e}", self.what)))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.inner.contains_tensor(name) {
            return Err(candle_core::Error::Msg(format!(
                "not found in {}",
                self.what
            )));
        }
        self.inner
            .get_unchecked(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(format!("in {}: {e}", self.what)))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
