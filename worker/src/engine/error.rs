//! The engine's error type: every variant carries the context a user needs to
//! act on it (file, tensor, layer, input row).

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A `config.json` (or equivalent metadata) is unreadable or inconsistent.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The file the configuration came from.
        path: PathBuf,
        /// The offending field (dotted for nested fields).
        field: String,
        /// What was expected.
        message: String,
    },
    /// The model's architecture is not one the engine implements.
    #[error("{path}: unknown architecture `{found}`: expected one of {expected}")]
    UnknownArchitecture {
        /// The file naming the architecture.
        path: PathBuf,
        /// What the file says.
        found: String,
        /// The supported names.
        expected: String,
    },
    /// A weight is missing, has the wrong shape, or could not be read.
    #[error("weight `{tensor}`: {source}")]
    Weight {
        /// The tensor's full name (HF naming).
        tensor: String,
        /// The underlying error (boxed: candle's error type is large).
        #[source]
        source: Box<candle_core::Error>,
    },
    /// A forward pass failed inside a given layer (`None`: outside the blocks).
    #[error("forward pass failed {}: {source}", match .layer { Some(l) => format!("in layer {l}"), None => "outside the blocks".to_string() })]
    Forward {
        /// The block index, if the failure was inside a block.
        layer: Option<usize>,
        /// The underlying error (boxed: candle's error type is large).
        #[source]
        source: Box<candle_core::Error>,
    },
    /// Tokenisation failed or produced nothing usable.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The caller's input is unusable (empty list, empty text, bad options).
    #[error("input {}: {message}", match .index { Some(i) => format!("#{i}"), None => "list".to_string() })]
    Input {
        /// The input row, when one row is at fault.
        index: Option<usize>,
        /// What was expected.
        message: String,
    },
    /// The device map does not fit the model.
    #[error("device map: {0}")]
    DeviceMap(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model file is malformed (truncated, corrupt, inconsistent metadata).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl EngineError {
    pub(crate) fn forward(layer: Option<usize>) -> impl FnOnce(candle_core::Error) -> EngineError {
        move |source| EngineError::Forward {
            layer,
            source: Box::new(source),
        }
    }

    pub(crate) fn weight(
        tensor: impl Into<String>,
    ) -> impl FnOnce(candle_core::Error) -> EngineError {
        let tensor = tensor.into();
        move |source| EngineError::Weight {
            tensor,
            source: Box::new(source),
        }
    }
}
