//! Locating grid errors: byte offsets into the file become line, column and
//! the dotted field at fault.

use super::GridError;
use std::path::Path;
use toml::Spanned;

/// The grid text and its file name, for errors.
pub(super) struct Located<'a> {
    pub text: &'a str,
    pub file: &'a Path,
}

impl Located<'_> {
    /// An error at a byte offset.
    pub fn at(&self, offset: usize, field: &str, message: &str) -> GridError {
        let (line, column) = line_col(self.text, offset);
        GridError::Invalid {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    /// An error at a spanned value.
    pub fn err<T>(&self, s: &Spanned<T>, field: &str, message: impl AsRef<str>) -> GridError {
        self.at(s.span().start, field, message.as_ref())
    }

    /// A TOML or serde error of the whole file, located at its span.
    pub fn toml(&self, e: &toml::de::Error) -> GridError {
        let offset = e.span().map_or(0, |s| s.start);
        self.at(
            offset,
            &field_of(e.message(), self.text, offset),
            e.message(),
        )
    }

    /// The line of a byte offset (1-based).
    pub fn line(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    /// Offset of a table header such as `[probe]`, or 0 when absent.
    pub fn header(&self, name: &str) -> usize {
        self.text.find(&format!("[{name}]")).unwrap_or(0)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Best-effort field name for a toml error: the key the message names, else
/// the key on the error's line.
fn field_of(message: &str, text: &str, offset: usize) -> String {
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(end) = rest.find('`') {
                return rest[..end].to_string();
            }
        }
    }
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    line.split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches(['[', ']'])
        .to_string()
}
