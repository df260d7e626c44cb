//! The operator's guide (deploy/README.md) names only things that exist: every
//! object, label, port, Secret, overlay, Dockerfile and image in its shell
//! commands is checked against the rendered manifests and the repository, and
//! its `cd-coordinator` commands parse with the binary's own command line.

mod deploy_support;

use deploy_support::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// The shell commands of the guide's ```bash blocks, continuation lines joined.
fn commands() -> Vec<String> {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/README.md")).expect("deploy/README.md");
    let mut out = Vec::new();
    let mut in_block = false;
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = t == "```bash";
            continue;
        }
        if !in_block || t.starts_with('#') || t.is_empty() {
            continue;
        }
        let t = t.split("   #").next().unwrap_or(t).trim_end();
        match t.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    assert!(
        out.len() > 20,
        "deploy/README.md: expected the guide's commands, found {}",
        out.len()
    );
    out
}

/// Everything every overlay renders.
fn all_objects() -> Option<Vec<Value>> {
    let mut all = Vec::new();
    for o in OVERLAYS {
        all.extend(render(o)?.iter().cloned());
    }
    Some(all)
}

/// kubectl's resource words as used in the guide, mapped to kinds.
fn kind_of(word: &str) -> Option<&'static str> {
    Some(match word {
        "statefulset" | "sts" => "StatefulSet",
        "job" => "Job",
        "service" | "svc" => "Service",
        "deployment" => "Deployment",
        "persistentvolumeclaim" | "pvc" => "PersistentVolumeClaim",
        "configmap" => "ConfigMap",
        "pod" => "Pod",
        _ => return None,
    })
}

/// Names of the Secrets the manifests reference, with the keys they read.
fn referenced_secrets(objs: &[Value]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (owner, c) in containers(objs) {
        for e in c["env"].as_array().into_iter().flatten() {
            let r = &e["valueFrom"]["secretKeyRef"];
            if let (Some(n), Some(k)) = (r["name"].as_str(), r["key"].as_str()) {
                out.push((n.to_string(), Some(k.to_string())));
            }
        }
        for v in pod_spec(owner).expect("pod")["volumes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = v["secret"]["secretName"].as_str() {
                out.push((n.to_string(), None));
            }
        }
    }
    out
}

#[test]
fn kubectl_commands_name_objects_that_the_overlays_render() {
    let Some(objs) = all_objects() else { return };
    let namespace = objs
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .expect("a namespace")["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let mut checked = 0;
    for cmd in commands().iter().filter(|c| c.starts_with("kubectl ")) {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            // Namespaces.
            if *w == "-n" || *w == "namespace" {
                assert_eq!(
                    words.get(i + 1),
                    Some(&namespace.as_str()),
                    "`{cmd}`: unknown namespace"
                );
            }
            // kind/name references.
            if let Some((k, name)) = w.split_once('/') {
                if let Some(kind) = kind_of(k) {
                    assert!(
                        find(&objs, kind, name).is_some(),
                        "`{cmd}`: no {kind} named {name} is rendered"
                    );
                    checked += 1;
                    if kind == "Service"
                        && words.get(i - 1) != Some(&"-n")
                        && words.contains(&"port-forward")
                    {
                        let remote: u64 = words[i + 1]
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .expect("port");
                        let svc = find(&objs, kind, name).expect("service");
                        let ports: Vec<u64> = svc["spec"]["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p["port"].as_u64())
                            .collect();
                        assert!(
                            ports.contains(&remote),
                            "`{cmd}`: service {name} has no port {remote} ({ports:?})"
                        );
                    }
                }
            }
            // `kubectl ... delete pod NAME` / `patch job NAME`.
            if let (Some(kind), Some(name)) = (kind_of(w), words.get(i + 1)) {
                if i > 0 && ["delete", "patch"].contains(&words[i - 1]) {
                    let ok = if kind == "Pod" {
                        name.strip_suffix("-0")
                            .is_some_and(|s| find(&objs, "StatefulSet", s).is_some())
                    } else {
                        find(&objs, kind, name).is_some()
                    };
                    assert!(ok, "`{cmd}`: no {kind} {name} in the manifests");
                    checked += 1;
                }
            }
            // Label selectors must select some pod template.
            if *w == "-l" {
                let sel = words[i + 1];
                let (k, v) = sel.split_once('=').expect("key=value selector");
                let hit = objs.iter().filter_map(|o| match o["kind"].as_str() {
                    Some("Job" | "StatefulSet" | "Deployment") => {
                        Some(&o["spec"]["template"]["metadata"]["labels"][k])
                    }
                    _ => None,
                });
                assert!(
                    hit.into_iter().any(|l| l == v),
                    "`{cmd}`: selector {sel} matches no pod"
                );
                checked += 1;
            }
            // Overlays.
            if *w == "-k" {
                let dir = repo_root().join(words[i + 1]);
                assert!(
                    dir.join("kustomization.yaml").is_file(),
                    "`{cmd}`: {} is no kustomization",
                    dir.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 15,
        "too few names were checked ({checked}); did the guide's format change?"
    );
}

#[test]
fn every_referenced_secret_is_created_by_the_guide_with_its_keys() {
    let Some(objs) = all_objects() else { return };
    let cmds = commands();
    let creates: Vec<&String> = cmds
        .iter()
        .filter(|c| c.contains("create secret generic"))
        .collect();
    for (secret, key) in referenced_secrets(&objs) {
        let cmd = creates
            .iter()
            .find(|c| c.split_whitespace().any(|w| w == secret))
            .unwrap_or_else(|| panic!("deploy/README.md never creates Secret {secret}"));
        let Some(key) = key else { continue };
        if let Some(file) = cmd
            .split_whitespace()
            .find_map(|w| w.strip_prefix("--from-env-file="))
        {
            let example = repo_root().join(format!("{file}.example"));
            let text = std::fs::read_to_string(&example)
                .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
            let keys: BTreeSet<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
                .collect();
            assert!(
                keys.contains(key.as_str()),
                "{}: has no {key}, which Secret {secret} must hold",
                example.display()
            );
        } else {
            assert!(
                cmd.contains(&format!("--from-file={key}=")),
                "`{cmd}` does not create key {key}"
            );
        }
    }
    // The token Secret is mounted as a file that the binaries are pointed at.
    for overlay in OVERLAYS {
        let Some(o) = render(overlay) else { return };
        for (kind, name, c) in [
            ("StatefulSet", "cd-coordinator", "coordinator"),
            ("Job", "cd-worker", "worker"),
        ] {
            let c = container(o, kind, name, c);
            let args = expanded_args(o, c, "p");
            let file = flag(&args, "--token-file")
                .unwrap_or_else(|| panic!("{overlay}: {name} has no --token-file"));
            let mounted = c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
                m["name"] == "token"
                    && m["mountPath"]
                        .as_str()
                        .is_some_and(|p| file == format!("{p}/token"))
            });
            assert!(
                mounted,
                "{overlay}: {name}'s --token-file {file} is not the mounted Secret's `token` key"
            );
        }
    }
}

#[test]
fn docker_builds_in_the_guide_produce_the_images_the_overlays_run() {
    let Some(objs) = all_objects() else { return };
    let run: BTreeSet<String> = containers(&objs)
        .iter()
        .filter_map(|(_, c)| c["image"].as_str())
        .filter_map(|i| i.rsplit('/').next())
        .filter(|i| i.starts_with("cd-"))
        .map(str::to_string)
        .collect();
    let mut built = BTreeSet::new();
    for cmd in commands().iter().filter(|c| c.starts_with("docker build")) {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let file = words
            .iter()
            .position(|w| *w == "-f")
            .map(|i| words[i + 1])
            .expect("docker build -f FILE");
        assert!(
            repo_root().join(file).is_file(),
            "`{cmd}`: {file} does not exist"
        );
        let tag = words
            .iter()
            .position(|w| *w == "-t")
            .map(|i| words[i + 1])
            .expect("docker build -t IMAGE");
        built.insert(
            tag.trim_matches('"')
                .rsplit('/')
                .next()
                .expect("image")
                .to_string(),
        );
    }
    assert_eq!(
        built, run,
        "the guide builds other images than the overlays run"
    );
}

#[test]
fn report_commands_parse_and_name_the_shipped_sweeps() {
    let grids: Vec<String> = ["grids/full.toml", "grids/quickstart.toml"]
        .iter()
        .map(|g| {
            let text = std::fs::read_to_string(repo_root().join(g)).expect("grid");
            let line = text
                .lines()
                .find(|l| l.starts_with("sweep = "))
                .expect("sweep = in grid");
            line.trim_start_matches("sweep = ")
                .trim_matches('"')
                .to_string()
        })
        .collect();
    let cmds = commands();
    let reports: Vec<&String> = cmds
        .iter()
        .filter(|c| c.starts_with("cd-coordinator report"))
        .collect();
    assert!(
        !reports.is_empty(),
        "the guide shows no `cd-coordinator report`"
    );
    for c in &reports {
        let words: Vec<String> = c.split_whitespace().skip(1).map(str::to_string).collect();
        let sweep = flag(&words, "--sweep").expect("--sweep");
        assert!(
            grids.iter().any(|g| g == sweep),
            "`{c}`: no shipped grid has sweep {sweep}"
        );
    }
    for c in cmds.iter().filter(|c| c.contains("/report/")) {
        assert!(
            grids.iter().any(|g| c.contains(&format!("/{g}/report/"))),
            "`{c}`: the report path names no shipped sweep"
        );
    }
    let Some(bin) = workspace_bin("cd-coordinator") else {
        return;
    };
    for c in reports {
        let args: Vec<&str> = c.split_whitespace().skip(1).collect();
        let out = std::process::Command::new(&bin)
            .args(&args)
            .arg("--help")
            .output()
            .expect("run cd-coordinator");
        assert!(
            out.status.success(),
            "`{c}` does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
