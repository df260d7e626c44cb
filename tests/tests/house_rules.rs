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
