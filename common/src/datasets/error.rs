//! The one error type of the datasets module.

use std::path::PathBuf;

/// Everything that can go wrong loading a dataset. Messages name the file,
/// the line (or JSON element) and the field, and say what was expected.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("unknown dataset `{name}`: known datasets are {known}")]
    UnknownDataset { name: String, known: String },
    #[error("dataset `{dataset}` is a {actual} dataset, not a {wanted} one")]
    WrongKind {
        dataset: String,
        actual: &'static str,
        wanted: &'static str,
    },
    #[error(
        "dataset `{dataset}`: none of its files exists under {root}; looked for {tried}. {hint}"
    )]
    NotFound {
        dataset: String,
        root: PathBuf,
        tried: String,
        hint: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: field `{field}`: expected {expected}, found {found}")]
    Parse {
        file: PathBuf,
        line: String,
        field: String,
        expected: String,
        found: String,
    },
    #[error("dataset `{dataset}` has no examples of class {class} (`{class_name}`); a probe needs both classes")]
    OneClass {
        dataset: String,
        class: usize,
        class_name: String,
    },
    #[error("dataset `{dataset}`: {detail}")]
    TooFew { dataset: String, detail: String },
    #[error("invalid {what} `{value}`: expected {expected}")]
    BadOption {
        what: &'static str,
        value: String,
        expected: String,
    },
    #[error(
        "data root `{root}` is remote; resolve it to a local directory first (see DataRoot docs)"
    )]
    RemoteRoot { root: String },
}

impl DatasetError {
    /// Shorthand for a parse error.
    pub(crate) fn parse(
        file: &std::path::Path,
        line: impl ToString,
        field: &str,
        expected: &str,
        found: impl ToString,
    ) -> Self {
        let mut found = found.to_string();
        if found.chars().count() > 80 {
            found = found.chars().take(77).collect::<String>() + "...";
        }
        DatasetError::Parse {
            file: file.to_path_buf(),
            line: line.to_string(),
            field: field.to_string(),
            expected: expected.to_string(),
            found,
        }
    }
}

impl DatasetError {
    /// Whether the error is about this machine's copy of the data rather
    /// than the data itself: the files are missing or unreadable here, or the
    /// data root is remote and was not made local. Another machine may load
    /// the same dataset fine.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            DatasetError::NotFound { .. }
                | DatasetError::Io { .. }
                | DatasetError::RemoteRoot { .. }
        )
    }
}
