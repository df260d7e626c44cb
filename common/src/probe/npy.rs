//! A minimal reader of NumPy `.npy` files (C order, little-endian), enough
//! for probe fixtures and benchmark inputs written by `numpy.save`.

use super::ProbeError;
use std::path::Path;

/// An array read from a `.npy` file, converted to f32 or integer labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy<T> {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values in C order.
    pub data: Vec<T>,
}

fn err(path: &Path, msg: impl Into<String>) -> ProbeError {
    ProbeError::Npy {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Parse the header; returns (descr, shape, data offset).
fn header(path: &Path, bytes: &[u8]) -> Result<(String, Vec<usize>, usize), ProbeError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err(path, "not a .npy file (bad magic)"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(err(path, format!("unsupported .npy version {v}"))),
    };
    let text = bytes
        .get(start..start + len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| err(path, "truncated or non-UTF-8 header"))?;
    let field = |key: &str| -> Result<&str, ProbeError> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or_else(|| err(path, format!("header lacks '{key}'")))?;
        Ok(text[at + key.len() + 2..]
            .trim_start()
            .trim_start_matches(':')
            .trim_start())
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(err(
            path,
            "Fortran-ordered arrays are not supported; save a C-ordered copy",
        ));
    }
    let descr = field("descr")?;
    let descr = descr
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("")
        .to_string();
    let shape_text = field("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| err(path, "malformed shape in header"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(path, format!("bad dimension `{s}` in shape")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((descr, shape, start + len))
}

fn load(path: &Path) -> Result<(String, Vec<usize>, Vec<u8>, usize), ProbeError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let (descr, shape, offset) = header(path, &bytes)?;
    Ok((descr, shape, bytes, offset))
}

fn check_len(path: &Path, shape: &[usize], have: usize, width: usize) -> Result<usize, ProbeError> {
    let count: usize = shape.iter().product();
    if have != count * width {
        return Err(err(
            path,
            format!(
                "shape {shape:?} needs {} data bytes, file has {have}",
                count * width
            ),
        ));
    }
    Ok(count)
}

/// Read a float array (`<f4` or `<f8`) as f32.
pub fn read_f32(path: &Path) -> Result<Npy<f32>, ProbeError> {
    let (descr, shape, bytes, offset) = load(path)?;
    let body = &bytes[offset..];
    let data = match descr.as_str() {
        "<f4" => {
            check_len(path, &shape, body.len(), 4)?;
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        "<f8" => {
            check_len(path, &shape, body.len(), 8)?;
            body.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect()
        }
        other => {
            return Err(err(
                path,
                format!("expected dtype <f4 or <f8, found {other}"),
            ))
        }
    };
    Ok(Npy { shape, data })
}

/// Read an integer array (`|u1`, `|i1`, `<i4`, `<i8`) as i64.
pub fn read_i64(path: &Path) -> Result<Npy<i64>, ProbeError> {
    let (descr, shape, bytes, offset) = load(path)?;
    let body = &bytes[offset..];
    let width = match descr.as_str() {
        "|u1" | "|i1" => 1,
        "<i4" => 4,
        "<i8" => 8,
        other => {
            return Err(err(
                path,
                format!("expected an integer dtype, found {other}"),
            ))
        }
    };
    check_len(path, &shape, body.len(), width)?;
    let data = body
        .chunks_exact(width)
        .map(|c| match descr.as_str() {
            "|u1" => i64::from(c[0]),
            "|i1" => i64::from(c[0] as i8),
            "<i4" => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            _ => i64::from_le_bytes(c.try_into().expect("8 bytes")),
        })
        .collect();
    Ok(Npy { shape, data })
}
