//! What every crate's tests share about their environment (behind the
//! `test-support` feature; not part of the product).

/// Whether the tests run in CI: `CI` set to anything but empty, `0` or
/// `false`. There, a missing prerequisite (a model file, a tool) is a
/// failure instead of a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}
