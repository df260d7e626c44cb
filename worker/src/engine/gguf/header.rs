//! A bounds check of a GGUF file's header before the full parser reads it.
//!
//! The parser trusts the counts and lengths it reads: a length beyond the
//! file allocates without bound, an alignment of 0 divides by zero. This
//! walk reads only the header (counts, metadata keys and values, tensor
//! infos) and refuses, naming the key, any count or length the file cannot
//! hold, an alignment that is not a power of two, and tensor dimensions
//! whose product overflows.

use super::format_err;
use crate::engine::error::EngineError;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

/// Metadata value types of the GGUF format.
const U8: u32 = 0;
const I8: u32 = 1;
const U16: u32 = 2;
const I16: u32 = 3;
const U32: u32 = 4;
const I32: u32 = 5;
const F32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;
const I64: u32 = 11;
const F64: u32 = 12;

/// Reads the header, tracking the position to bound every length by what
/// is left of the file.
struct Walker<'a, R> {
    r: &'a mut BufReader<R>,
    pos: u64,
    len: u64,
    path: &'a Path,
    /// Counts are u32 in version 1, u64 later.
    wide: bool,
}

impl<R: Read> Walker<'_, R> {
    fn err(&self, what: impl std::fmt::Display) -> EngineError {
        format_err(
            self.path,
            format!(
                "not a readable GGUF file (corrupt or truncated?): {what} (at byte {})",
                self.pos
            ),
        )
    }

    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EngineError> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.err(format!("{what}: the file ends")))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, EngineError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn count(&mut self, what: &str) -> Result<u64, EngineError> {
        if self.wide {
            Ok(u64::from_le_bytes(self.bytes(what)?))
        } else {
            Ok(u64::from(self.u32(what)?))
        }
    }

    /// Skip `n` bytes the file must still hold.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), EngineError> {
        if n > self.left() {
            return Err(self.err(format!(
                "{what}: length {n} exceeds the {} bytes left in the file",
                self.left()
            )));
        }
        let mut rest = n;
        while rest > 0 {
            let available = match self.r.fill_buf() {
                Ok(buf) => buf.len() as u64,
                Err(e) => return Err(self.err(format!("{what}: {e}"))),
            };
            if available == 0 {
                return Err(self.err(format!("{what}: the file ends")));
            }
            let take = rest.min(available) as usize;
            self.r.consume(take);
            rest -= take as u64;
        }
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, EngineError> {
        let n = self.count(what)?;
        if n > self.left() || n > 1 << 20 {
            return Err(self.err(format!("{what}: string length {n} is beyond the file")));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.err(format!("{what}: the file ends")))?;
        self.pos += n;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    fn skip_string(&mut self, what: &str) -> Result<(), EngineError> {
        let n = self.count(what)?;
        self.skip(n, what)
    }

    /// Skip a value of type `ty`; returns it when it is a small integer.
    fn value(&mut self, ty: u32, key: &str) -> Result<Option<u64>, EngineError> {
        let what = format!("metadata `{key}`");
        Ok(match ty {
            U8 | I8 | BOOL => Some(u64::from(self.bytes::<1>(&what)?[0])),
            U16 | I16 => Some(u64::from(u16::from_le_bytes(self.bytes(&what)?))),
            U32 | I32 => Some(u64::from(self.u32(&what)?)),
            F32 => {
                self.skip(4, &what)?;
                None
            }
            U64 | I64 => Some(u64::from_le_bytes(self.bytes(&what)?)),
            F64 => {
                self.skip(8, &what)?;
                None
            }
            STRING => {
                self.skip_string(&what)?;
                None
            }
            ARRAY => {
                let inner = self.u32(&what)?;
                let n = self.count(&what)?;
                let min = match inner {
                    U8 | I8 | BOOL => 1,
                    U16 | I16 => 2,
                    U32 | I32 | F32 => 4,
                    _ => 8,
                };
                if n.saturating_mul(min) > self.left() {
                    return Err(
                        self.err(format!("{what}: array of {n} elements is beyond the file"))
                    );
                }
                for _ in 0..n {
                    if inner == ARRAY {
                        return Err(self.err(format!("{what}: nested arrays")));
                    }
                    self.value(inner, key)?;
                }
                None
            }
            other => return Err(self.err(format!("{what}: unknown value type {other}"))),
        })
    }
}

/// Walk the header of the GGUF file read by `r`, refusing anything the full
/// parser could not read safely.
pub(super) fn check<R: Read + std::io::Seek>(
    r: &mut BufReader<R>,
    path: &Path,
) -> Result<(), EngineError> {
    let len = r
        .get_mut()
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| format_err(path, format!("cannot read: {e}")))?;
    r.rewind()
        .map_err(|e| format_err(path, format!("cannot read: {e}")))?;
    let mut w = Walker {
        r,
        pos: 0,
        len,
        path,
        wide: true,
    };
    let magic = w.bytes::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(w.err(format!("magic {magic:?}, expected \"GGUF\"")));
    }
    let version = w.u32("version")?;
    if !(1..=3).contains(&version) {
        return Err(w.err(format!("version {version}, expected 1, 2 or 3")));
    }
    w.wide = version >= 2;
    let tensors = w.count("tensor count")?;
    let kvs = w.count("metadata count")?;
    // Each metadata entry takes at least 12 bytes, each tensor info 24.
    if kvs.saturating_mul(12) > w.left() {
        return Err(w.err(format!("{kvs} metadata entries are beyond the file")));
    }
    if tensors.saturating_mul(24) > w.left() {
        return Err(w.err(format!("{tensors} tensors are beyond the file")));
    }
    for _ in 0..kvs {
        let key = w.string("metadata key")?;
        let ty = w.u32(&format!("metadata `{key}` type"))?;
        let value = w.value(ty, &key)?;
        if key == "general.alignment" {
            match value {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 16 => {}
                _ => {
                    return Err(format_err(
                        path,
                        format!(
                        "metadata `general.alignment` = {}: expected a power of two (default 32)",
                        value.map_or("not an integer".to_string(), |v| v.to_string())
                    ),
                    ))
                }
            }
        }
    }
    for _ in 0..tensors {
        let name = w.string("tensor name")?;
        let what = format!("tensor `{name}`");
        let dims = w.u32(&what)?;
        if dims > 4 {
            return Err(w.err(format!("{what}: {dims} dimensions, expected at most 4")));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let d = w.count(&what)?;
            elements = elements
                .checked_mul(d)
                .filter(|&e| e <= len.saturating_mul(8))
                .ok_or_else(|| w.err(format!("{what}: dimensions beyond the file")))?;
        }
        w.skip(4 + 8, &what)?;
    }
    Ok(())
}
