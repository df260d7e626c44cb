//! Rules of the source tree a newcomer relies on: no module cycles inside a
//! crate (`scripts/ci/module_cycles.py`: a module's dependencies can be read in
//! one direction) and no `#[path]` includes (every dependency between crates
//! goes through Cargo).

use cd_tests::workspace_root;
use std::path::Path;
use std::process::Command;

const CRATES: [&str; 5] = ["common", "worker", "coordinator", "proto", "tests"];

#[test]
fn no_crate_has_a_module_cycle() {
    let root = workspace_root();
    let srcs: Vec<String> = CRATES
        .iter()
        .map(|c| root.join(c).join("src").display().to_string())
        .collect();
    let out = Command::new("python3")
        .arg(root.join("scripts/ci/module_cycles.py"))
        .args(&srcs)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "module cycles:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    // The check above could pass by finding nothing at all: a two-module crate
    // whose modules use each other must be reported.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use super::a::A;\npub struct B;\n").unwrap();
    let out = Command::new("python3")
        .arg(workspace_root().join("scripts/ci/module_cycles.py"))
        .arg(&src)
        .output()
        .expect("python3 runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a -> b -> a"));
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_includes_another_by_path() {
    let root = workspace_root();
    let mut files = Vec::new();
    for c in CRATES {
        rust_files(&root.join(c), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let needle = ["#[", "path"].concat();
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l.trim_start().replace(' ', "").starts_with(&needle))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "#[path] includes in {offenders:?}");
}

/// Every `.rs` file under the crates' `src/` directories (product and test
/// harness code; integration-test files are excluded).
fn product_sources() -> Vec<std::path::PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for c in CRATES {
        rust_files(&root.join(c).join("src"), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    files
}

/// Lines before the file's unit tests (`#[cfg(test)]` at the top level).
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

/// What a file over the limit writes in its header, followed by its reason.
const LONG_FILE_REASON: &str = "//! Why this file is long:";
const LONG_FILE_LINES: usize = 500;

fn long_files_without_a_reason(files: &[std::path::PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let header: Vec<&str> = text
                .lines()
                .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
                .collect();
            let explained = header.iter().any(|l| {
                l.strip_prefix(LONG_FILE_REASON)
                    .is_some_and(|why| why.trim().len() > 20)
            });
            let n = code_lines(&text);
            (n > LONG_FILE_LINES && !explained).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect()
}

#[test]
fn source_files_over_500_lines_say_why_at_their_top() {
    let offenders = long_files_without_a_reason(&product_sources());
    assert!(
        offenders.is_empty(),
        "split these files or write `{LONG_FILE_REASON} …` in their header:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_length_check_finds_a_long_file_and_accepts_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let body = "fn f() {}\n".repeat(LONG_FILE_LINES + 1);
    let silent = tmp.path().join("silent.rs");
    std::fs::write(&silent, format!("//! A module.\n\n{body}")).unwrap();
    let explained = tmp.path().join("explained.rs");
    std::fs::write(
        &explained,
        format!("//! A module.\n//!\n{LONG_FILE_REASON} one state machine, read top to bottom.\n\n{body}"),
    )
    .unwrap();
    let tested = tmp.path().join("tested.rs");
    std::fs::write(
        &tested,
        format!("fn f() {{}}\n#[cfg(test)]\nmod tests {{\n{body}}}\n"),
    )
    .unwrap();
    let found = long_files_without_a_reason(&[silent, explained, tested]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("silent.rs"));
}

/// Public types (`pub struct|enum|trait|type Name`) per name, with where.
fn public_types(files: &[std::path::PathBuf]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut names: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            let Some(rest) = ["pub struct ", "pub enum ", "pub trait ", "pub type "]
                .iter()
                .find_map(|k| line.strip_prefix(k))
            else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names
                .entry(name)
                .or_default()
                .push(format!("{}:{}", f.display(), i + 1));
        }
    }
    names
}

#[test]
fn no_two_public_types_share_a_name() {
    let names = public_types(&product_sources());
    assert!(names.len() > 100, "found only {} public types", names.len());
    let shared: Vec<String> = names
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(n, at)| format!("{n}: {}", at.join(", ")))
        .collect();
    assert!(
        shared.is_empty(),
        "one name, several types:\n{}",
        shared.join("\n")
    );
}

#[test]
fn architecture_names_only_files_that_exist() {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    // Paths are written from the root or from a crate's `src/` (or the
    // engine's directory, inside the engine's paragraph).
    let bases = [
        "",
        "common/src/",
        "worker/src/",
        "worker/src/engine/",
        "worker/",
        "coordinator/src/",
        "proto/src/",
        "tests/src/",
    ];
    let extensions = [
        ".rs", ".toml", ".md", ".sh", ".py", ".yaml", ".proto", ".json", ".csv", ".html",
    ];
    let mut named = 0;
    let mut missing = Vec::new();
    for (i, quoted) in text.split('`').enumerate() {
        // Odd pieces are inside backticks.
        let path = quoted.split("::").next().unwrap_or("");
        if i % 2 == 0
            || !path.contains('/')
            || path.contains(char::is_whitespace)
            || path.contains("://")
            || path.contains(['<', '*'])
            || !(path.ends_with('/') || extensions.iter().any(|e| path.ends_with(e)))
        {
            continue;
        }
        named += 1;
        if !bases.iter().any(|b| root.join(b).join(path).exists()) {
            missing.push(path.to_string());
        }
    }
    assert!(named > 40, "ARCHITECTURE.md names only {named} paths");
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names missing paths: {missing:?}"
    );
}

/// The path segments of a sweep's layout in the store.
const LAYOUT_SEGMENTS: [&str; 4] = ["/tasks/", "/state/", "/report/", "/attempts/"];

/// Lines of product code (before a file's unit tests, comments aside) whose
/// string literals spell a part of the store's layout.
fn store_keys_spelled(files: &[std::path::PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().take(code_lines(&text)).enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // Pieces at odd positions are inside double quotes.
            let spelled = code
                .split('"')
                .skip(1)
                .step_by(2)
                .any(|lit| LAYOUT_SEGMENTS.iter().any(|seg| lit.contains(seg)));
            if spelled {
                found.push(format!("{}:{}: {}", f.display(), i + 1, code));
            }
        }
    }
    found
}

#[test]
fn store_keys_are_spelled_only_in_the_layout_module() {
    let layout = workspace_root().join("common/src/storage/layout.rs");
    let files: Vec<_> = product_sources()
        .into_iter()
        .filter(|f| *f != layout && !f.starts_with(workspace_root().join("tests")))
        .collect();
    let offenders = store_keys_spelled(&files);
    assert!(
        offenders.is_empty(),
        "build these keys with cd_common::storage::layout:\n{}",
        offenders.join("\n")
    );
    // The check sees a key where the layout module spells one.
    assert!(!store_keys_spelled(&[layout]).is_empty());
}

/// Lines of product code (comments aside, before a file's unit tests) in
/// `files` that contain any of `needles`.
fn code_mentioning(files: &[std::path::PathBuf], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().take(code_lines(&text)).enumerate() {
            let code = line.trim_start();
            if !code.starts_with("//") && needles.iter().any(|n| code.contains(n)) {
                found.push(format!("{}:{}: {}", f.display(), i + 1, code));
            }
        }
    }
    found
}

fn engine_files(under: &str) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    rust_files(
        &workspace_root().join("worker/src/engine").join(under),
        &mut files,
    );
    files
}

/// The architecture variants, as code names them.
const ARCH_VARIANTS: [&str; 3] = ["Arch::Llama", "Arch::Qwen2", "Arch::Gemma"];

#[test]
fn only_the_families_name_an_architecture() {
    // A family's quirks live in its file (engine/family/); everything else
    // asks `cfg.arch.family()` and never names a variant. `config.rs`
    // declares the enum.
    let engine = workspace_root().join("worker/src/engine");
    let (family, config) = (engine.join("family"), engine.join("config.rs"));
    let mut files = Vec::new();
    rust_files(&workspace_root().join("worker/src"), &mut files);
    files.retain(|f| !f.starts_with(&family) && *f != config);
    let offenders = code_mentioning(&files, &ARCH_VARIANTS);
    assert!(
        offenders.is_empty(),
        "move these architecture switches into a Family method (engine/family/):\n{}",
        offenders.join("\n")
    );
    // The check sees the one match there is.
    assert!(!code_mentioning(&engine_files("family"), &ARCH_VARIANTS).is_empty());
}

#[test]
fn the_cpu_fast_path_imports_nothing_above_it() {
    // engine/cpu/ is called by the layers and imports only itself and the
    // activation enum, a leaf: the kernels can be read and tested alone.
    let above = [
        "engine::layers",
        "engine::family",
        "engine::config",
        "engine::quant",
        "engine::Model",
        "super::super",
    ];
    let offenders = code_mentioning(&engine_files("cpu"), &above);
    assert!(
        offenders.is_empty(),
        "engine/cpu/ must not depend on the engine above it:\n{}",
        offenders.join("\n")
    );
    // The check sees such an import where one exists (the layers use the CPU path).
    assert!(!code_mentioning(&engine_files("layers"), &["engine::config"]).is_empty());
}
