//! Shared helpers of the `deploy_*` tests: render the kustomize overlays with
//! the real kustomize (through `scripts/ci/deploy.sh`), look objects up, and
//! find the workspace's binaries.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The overlays every deployment check runs on.
pub const OVERLAYS: [&str; 2] = ["dev", "gpu"];

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub use cd_common::test_support::in_ci;

/// Give up on a test: a failure under CI, a printed skip otherwise.
/// Returns `None` so callers can write `let Some(x) = ... else { return };`.
pub fn unavailable<T>(why: &str) -> Option<T> {
    if in_ci() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// The objects of one overlay, as kustomize renders them, as JSON values.
/// `None` (test skipped) when the tools cannot be installed outside CI.
pub fn render(overlay: &str) -> Option<&'static [Value]> {
    static CACHE: OnceLock<BTreeMap<String, Result<Vec<Value>, String>>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        OVERLAYS
            .iter()
            .map(|o| {
                (
                    o.to_string(),
                    render_uncached(&format!("deploy/overlays/{o}")),
                )
            })
            .collect()
    });
    match all
        .get(overlay)
        .unwrap_or_else(|| panic!("unknown overlay {overlay}"))
    {
        Ok(v) => Some(v.as_slice()),
        Err(e) => unavailable(e),
    }
}

fn render_uncached(dir: &str) -> Result<Vec<Value>, String> {
    let out = Command::new("bash")
        .arg("scripts/ci/deploy.sh")
        .args(["--render-json", dir])
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("cannot run scripts/ci/deploy.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/ci/deploy.sh --render-json {dir} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("rendered {dir} is not JSON: {e}"))?;
    match v {
        Value::Array(items) if !items.is_empty() => Ok(items),
        other => Err(format!("rendered {dir} holds no objects: {other}")),
    }
}

/// The object of `kind` whose name is `name`, or whose name is `name` plus
/// kustomize's generated hash suffix (`name-<hash>`).
pub fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && name_matches(o, name))
}

/// Whether `obj`'s name is `name` or `name-<kustomize hash>`.
pub fn name_matches(obj: &Value, name: &str) -> bool {
    let Some(n) = obj["metadata"]["name"].as_str() else {
        return false;
    };
    n == name
        || n.strip_prefix(name)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|h| {
                h.len() == 10
                    && h.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
}

/// `kind/name` of an object, for messages.
pub fn id(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The pod spec of a workload object, if it has one.
pub fn pod_spec(obj: &Value) -> Option<&Value> {
    match obj["kind"].as_str()? {
        "Pod" => Some(&obj["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&obj["spec"]["template"]["spec"])
        }
        "CronJob" => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// Every container (init containers included) of every workload, with its owner.
pub fn containers(objs: &[Value]) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    for o in objs {
        let Some(spec) = pod_spec(o) else { continue };
        for key in ["initContainers", "containers"] {
            for c in spec[key].as_array().into_iter().flatten() {
                out.push((o, c));
            }
        }
    }
    out
}

/// The single container named `container` of workload `kind/name`.
pub fn container<'a>(objs: &'a [Value], kind: &str, name: &str, container: &str) -> &'a Value {
    let obj = find(objs, kind, name).unwrap_or_else(|| panic!("no {kind}/{name} rendered"));
    pod_spec(obj).expect("a workload")["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("{kind}/{name} has no container {container}"))
}

/// The volume mount of container `c` at `path`, and the volume of workload
/// `obj` it mounts; `None` when nothing is mounted there. Panics when the
/// mount names a volume the pod does not declare.
pub fn mounted_volume<'a>(
    obj: &'a Value,
    c: &'a Value,
    path: &str,
) -> Option<(&'a Value, &'a Value)> {
    let mount = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == path)?;
    let vol = pod_spec(obj).expect("a workload")["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .expect("mounted volume is declared");
    Some((mount, vol))
}

/// What a container's environment resolves to, as Kubernetes would build it:
/// `envFrom` ConfigMaps first, then `env` in order with `$(VAR)` expansion.
/// Secrets resolve to a placeholder (`<secret NAME/KEY>`) and the pod name to
/// `pod_name`.
pub fn resolve_env(objs: &[Value], c: &Value, pod_name: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for src in c["envFrom"].as_array().into_iter().flatten() {
        let name = src["configMapRef"]["name"]
            .as_str()
            .expect("only configMapRef envFrom is used");
        let cm = find(objs, "ConfigMap", name)
            .unwrap_or_else(|| panic!("envFrom names missing ConfigMap {name}"));
        for (k, v) in cm["data"].as_object().into_iter().flatten() {
            env.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"]
            .as_str()
            .expect("env entries have names")
            .to_string();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            format!(
                "<secret {}/{}>",
                r["name"].as_str().unwrap_or("?"),
                r["key"].as_str().unwrap_or("?")
            )
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
            let cm_name = r["name"].as_str().unwrap_or("?");
            let cm = find(objs, "ConfigMap", cm_name)
                .unwrap_or_else(|| panic!("env names missing ConfigMap {cm_name}"));
            cm["data"][r["key"].as_str().unwrap_or("?")]
                .as_str()
                .unwrap_or_default()
                .to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.to_string()
        } else {
            panic!("env {name}: unsupported source {e}")
        };
        env.insert(name, value);
    }
    env
}

/// Kubernetes' `$(VAR)` expansion of args and env values.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if env.contains_key(&after[..end]) => {
                out.push_str(&env[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A container's args with `$(VAR)` references expanded.
pub fn expanded_args(objs: &[Value], c: &Value, pod_name: &str) -> Vec<String> {
    let env = resolve_env(objs, c, pod_name);
    c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| expand(a.as_str().expect("args are strings"), &env))
        .collect()
}

/// The value of `--flag=value` (or `--flag value`) in an argument list.
pub fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&eq) {
            Some(v)
        } else if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

/// A workspace binary: from `CD_BIN_DIR` if set, else built next to this test
/// (`cargo nextest run --workspace` and `cargo build` put them there).
/// `None` (skipped) outside CI when absent.
pub fn workspace_bin(name: &str) -> Option<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let bin = match std::env::var_os("CD_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(file),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary lives in target/<profile>/deps");
            dir.join(file)
        }
    };
    if bin.is_file() {
        return Some(bin);
    }
    unavailable(&format!(
        "{} is not built; build the workspace's binaries first (cargo build --workspace --bins)",
        bin.display()
    ))
}
