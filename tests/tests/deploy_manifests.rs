//! The invariants a reviewer checks by eye in `deploy/`, asserted on the
//! overlays as kustomize renders them: pinned images, no inline secrets,
//! requests and limits everywhere, GPUs on workers only and matched to
//! `--gpus`, preemption not counted as failure, and the grid ConfigMaps equal
//! to the grids they copy.

mod deploy_support;

use cd_tests::{unpinned_dataset_standins, worker_exit};
use deploy_support::*;
use serde_json::Value;
use std::collections::BTreeSet;

/// Which grid each overlay's `grid.toml` copies.
const GRID_COPIES: [(&str, &str); 2] =
    [("dev", "grids/quickstart.toml"), ("gpu", "grids/full.toml")];

#[test]
fn grid_configmaps_are_exact_copies_of_the_grids() {
    for (overlay, grid) in GRID_COPIES {
        let root = repo_root();
        let copy = root.join(format!("deploy/overlays/{overlay}/grid.toml"));
        let want =
            std::fs::read_to_string(root.join(grid)).unwrap_or_else(|e| panic!("{grid}: {e}"));
        let got =
            std::fs::read_to_string(&copy).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
        assert!(
            got == want,
            "deploy/overlays/{overlay}/grid.toml differs from {grid}; copy it again: cp {grid} deploy/overlays/{overlay}/grid.toml"
        );
        let Some(objs) = render(overlay) else { return };
        let cm = find(objs, "ConfigMap", "cd-grid")
            .unwrap_or_else(|| panic!("{overlay}: no cd-grid ConfigMap"));
        assert_eq!(
            cm["data"]["grid.toml"].as_str(),
            Some(want.as_str()),
            "{overlay}: cd-grid holds another grid"
        );
    }
}

/// An image reference is pinned when it names a digest, or an exact version
/// tag (digits and dots, optionally followed by a suffix), never `latest`.
fn pinned(image: &str) -> bool {
    if let Some((_, digest)) = image.split_once("@sha256:") {
        return digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let Some((_, tag)) = last.split_once(':') else {
        return false;
    };
    let version = tag.split('-').next().unwrap_or("");
    version.split('.').count() >= 3
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[test]
fn the_pinning_rule_rejects_floating_references() {
    for bad in [
        "cd-worker",
        "cd-worker:latest",
        "nginx:1",
        "nginx:1.27",
        "minio/minio:RELEASE",
        "x@sha256:abc",
    ] {
        assert!(!pinned(bad), "{bad} should not count as pinned");
    }
    for good in [
        "cd-worker:0.1.0",
        "r.example/cd-worker:0.1.0-cuda13.0-sm90",
        &format!("m@sha256:{}", "a".repeat(64)),
    ] {
        assert!(pinned(good), "{good} should count as pinned");
    }
}

#[test]
fn every_image_is_pinned_and_ours_carry_the_workspace_version() {
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        for (owner, c) in containers(objs) {
            let image = c["image"].as_str().unwrap_or_default();
            assert!(
                pinned(image),
                "{overlay}: {} container {}: image `{image}` is not pinned",
                id(owner),
                c["name"]
            );
            let last = image.rsplit('/').next().unwrap_or_default();
            if last.starts_with("cd-") {
                let tag = last.split_once(':').map(|(_, t)| t).unwrap_or_default();
                assert!(
                    tag.starts_with(env!("CARGO_PKG_VERSION")),
                    "{overlay}: {image} should be tagged with the workspace version {}",
                    env!("CARGO_PKG_VERSION")
                );
            }
        }
    }
}

/// Env var names that hold credentials.
fn sensitive(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY"]
        .iter()
        .any(|s| n.contains(s))
}

#[test]
fn secrets_are_referenced_never_inlined() {
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        assert!(
            !objs.iter().any(|o| o["kind"] == "Secret"),
            "{overlay}: renders a Secret; credentials must be created by the operator (deploy/README.md)"
        );
        for (owner, c) in containers(objs) {
            for e in c["env"].as_array().into_iter().flatten() {
                let name = e["name"].as_str().unwrap_or_default();
                if let Some(v) = e["value"].as_str() {
                    assert!(
                        !sensitive(name),
                        "{overlay}: {} sets {name} inline",
                        id(owner)
                    );
                    // A value may only combine other variables, never spell a credential.
                    if name.starts_with("MC_HOST_") {
                        assert!(
                            v.contains("$(AWS_SECRET_ACCESS_KEY)"),
                            "{overlay}: {name} must reference the secret"
                        );
                    }
                } else if sensitive(name) {
                    assert!(
                        e["valueFrom"]["secretKeyRef"].is_object(),
                        "{overlay}: {} takes {name} from somewhere other than a Secret",
                        id(owner)
                    );
                }
            }
        }
        for cm in objs.iter().filter(|o| o["kind"] == "ConfigMap") {
            for key in cm["data"].as_object().into_iter().flatten().map(|(k, _)| k) {
                assert!(
                    !sensitive(key),
                    "{overlay}: {} holds {key}; it belongs in a Secret",
                    id(cm)
                );
            }
        }
    }
    // The operator's files with real values are never committed, only the examples.
    let tracked = std::process::Command::new("git")
        .args(["ls-files", "deploy/secrets"])
        .current_dir(repo_root())
        .output()
        .expect("git ls-files runs");
    assert!(tracked.status.success(), "git ls-files failed");
    for path in String::from_utf8_lossy(&tracked.stdout).lines() {
        assert!(
            path.ends_with(".example") || path.ends_with("/.gitignore"),
            "{path}: only *.example files of deploy/secrets belong in the repository"
        );
    }
}

#[test]
fn every_container_has_cpu_and_memory_requests_and_limits() {
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        for (owner, c) in containers(objs) {
            for kind in ["requests", "limits"] {
                for res in ["cpu", "memory"] {
                    assert!(
                        !c["resources"][kind][res].is_null(),
                        "{overlay}: {} container {} has no {kind}.{res}",
                        id(owner),
                        c["name"]
                    );
                }
            }
        }
    }
}

fn gpu_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[test]
fn gpus_are_requested_by_workers_only_and_match_the_gpus_flag() {
    let mut saw_gpu_overlay = false;
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        for (owner, c) in containers(objs) {
            let req = gpu_count(&c["resources"]["requests"]["nvidia.com/gpu"]);
            let lim = gpu_count(&c["resources"]["limits"]["nvidia.com/gpu"]);
            let is_worker =
                owner["kind"] == "Job" && name_matches(owner, "cd-worker") && c["name"] == "worker";
            if !is_worker {
                assert!(
                    req.is_none() && lim.is_none(),
                    "{overlay}: {} requests GPUs but is no worker",
                    id(owner)
                );
                continue;
            }
            let args = expanded_args(objs, c, "cd-worker-0-x7k2p");
            let gpus =
                flag(&args, "--gpus").unwrap_or_else(|| panic!("{overlay}: worker has no --gpus"));
            assert_eq!(req, lim, "{overlay}: worker GPU request and limit differ");
            match (gpus, lim) {
                ("cpu", None) => {}
                ("cpu", Some(n)) => {
                    panic!("{overlay}: worker runs --gpus cpu but requests {n} GPUs")
                }
                (g, None) => {
                    panic!("{overlay}: worker runs --gpus {g} without requesting nvidia.com/gpu")
                }
                ("all", Some(n)) => {
                    assert!(n >= 1, "{overlay}: --gpus all with {n} GPUs");
                    saw_gpu_overlay = true;
                }
                (list, Some(n)) => {
                    assert_eq!(
                        list.split(',').count() as u64,
                        n,
                        "{overlay}: --gpus {list} but {n} GPUs requested"
                    );
                    saw_gpu_overlay = true;
                }
            }
            if lim.is_some() {
                let spec = pod_spec(owner).expect("pod spec");
                let tolerates = spec["tolerations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["key"] == "nvidia.com/gpu" && t["effect"] == "NoSchedule");
                assert!(
                    tolerates,
                    "{overlay}: GPU workers must tolerate the nvidia.com/gpu taint"
                );
                let selects = spec["nodeSelector"]
                    .as_object()
                    .is_some_and(|m| m.keys().any(|k| k.starts_with("nvidia.com/")))
                    || !spec["affinity"]["nodeAffinity"].is_null();
                assert!(selects, "{overlay}: GPU workers must select GPU nodes");
            }
        }
    }
    assert!(saw_gpu_overlay, "no overlay runs workers on GPUs");
}

#[test]
fn worker_job_does_not_count_preemption_as_failure() {
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        let job =
            find(objs, "Job", "cd-worker").unwrap_or_else(|| panic!("{overlay}: no Job/cd-worker"));
        let spec = &job["spec"];
        assert_eq!(
            spec["completionMode"], "Indexed",
            "{overlay}: workers should be an Indexed Job"
        );
        assert_eq!(
            spec["parallelism"], spec["completions"],
            "{overlay}: every index is one long-lived worker"
        );
        assert_eq!(
            spec["template"]["spec"]["restartPolicy"], "Never",
            "{overlay}: podFailurePolicy needs restartPolicy Never"
        );
        let rules = spec["podFailurePolicy"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ignores_disruption = rules.iter().any(|r| {
            r["action"] == "Ignore"
                && r["onPodConditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "DisruptionTarget")
        });
        assert!(
            ignores_disruption,
            "{overlay}: podFailurePolicy must Ignore the DisruptionTarget condition"
        );
        // Exit codes come from the binaries' shared definition (proto/src/exit.rs).
        let codes = |action: &str| -> BTreeSet<i64> {
            rules
                .iter()
                .filter(|r| r["action"] == action && r["onExitCodes"].is_object())
                .inspect(|r| {
                    let on = &r["onExitCodes"];
                    assert_eq!(on["operator"], "In", "{overlay}: {action} rule: {on}");
                    assert_eq!(
                        on["containerName"], "worker",
                        "{overlay}: {action} rule: {on}"
                    );
                })
                .flat_map(|r| {
                    r["onExitCodes"]["values"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|v| v.as_i64().expect("exit codes are integers"))
                .collect()
        };
        let signalled = i64::from(worker_exit::SIGNALLED);
        assert_eq!(
            codes("Ignore"),
            BTreeSet::from([signalled]),
            "{overlay}: a worker stopped mid-sweep exits {signalled}: the Job must Ignore that code (and only it)"
        );
        assert!(
            codes("FailJob").is_empty(),
            "{overlay}: one worker's exit must never fail the whole Job"
        );
        assert_eq!(
            codes("FailIndex"),
            BTreeSet::from([i64::from(worker_exit::CONFIG)]),
            "{overlay}: only a pod's own configuration error fails its index at once"
        );
        assert_eq!(
            codes("Count"),
            BTreeSet::from([
                i64::from(worker_exit::ERROR),
                i64::from(worker_exit::AUTH),
                i64::from(worker_exit::UNREACHABLE)
            ]),
            "{overlay}: transient worker exits count against their own index only"
        );
        assert!(
            spec["backoffLimitPerIndex"].as_u64().is_some(),
            "{overlay}: FailIndex and per-index counting need backoffLimitPerIndex"
        );
        // Kubernetes 1.33+ rejects a pod condition rule without a status.
        for r in &rules {
            for c in r["onPodConditions"].as_array().into_iter().flatten() {
                assert_eq!(
                    c["status"], "True",
                    "{overlay}: onPodConditions needs `status` (Kubernetes 1.33+): {c}"
                );
            }
        }
        assert!(
            !codes("Count").contains(&i64::from(worker_exit::OK)),
            "{overlay}: exit 0 is a finished worker"
        );
        // The worker must leave before the kubelet kills it: its own grace is shorter.
        let c = container(objs, "Job", "cd-worker", "worker");
        let args = expanded_args(objs, c, "cd-worker-0-x7k2p");
        let grace: u64 = flag(&args, "--shutdown-grace-secs")
            .and_then(|v| v.parse().ok())
            .expect("--shutdown-grace-secs");
        let pod_grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace < pod_grace,
            "{overlay}: --shutdown-grace-secs {grace} must be below the pod's {pod_grace}s"
        );
        assert!(
            args.iter().any(|a| a == "--idle-exit"),
            "{overlay}: workers must exit 0 when the sweep is done"
        );
    }
}

#[test]
fn worker_model_cache_is_a_volume_at_hf_home() {
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        let c = container(objs, "Job", "cd-worker", "worker");
        let env = resolve_env(objs, c, "cd-worker-0-x7k2p");
        let hf_home = env
            .get("HF_HOME")
            .unwrap_or_else(|| panic!("{overlay}: worker has no HF_HOME"));
        let args = expanded_args(objs, c, "cd-worker-0-x7k2p");
        // --model-cache is the Hub cache itself, which the Hub's own tools put at $HF_HOME/hub.
        let hub = format!("{hf_home}/hub");
        assert_eq!(
            flag(&args, "--model-cache"),
            Some(hub.as_str()),
            "{overlay}: --model-cache is not $HF_HOME/hub"
        );
        let job = find(objs, "Job", "cd-worker").expect("worker job");
        let (_, vol) = mounted_volume(job, c, hf_home)
            .unwrap_or_else(|| panic!("{overlay}: nothing mounted at HF_HOME {hf_home}"));
        let claim = vol["persistentVolumeClaim"]["claimName"].as_str();
        assert!(
            claim.is_some_and(|n| find(objs, "PersistentVolumeClaim", n).is_some())
                || vol["hostPath"].is_object(),
            "{overlay}: the model cache must be a rendered PVC or a hostPath, not {vol}"
        );
        let token = env.get("HF_TOKEN").expect("HF_TOKEN is passed to workers");
        assert!(
            token.starts_with("<secret "),
            "{overlay}: HF_TOKEN must come from a Secret"
        );
    }
}

#[test]
fn worker_data_cache_is_a_volume_passed_as_data_cache() {
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        let c = container(objs, "Job", "cd-worker", "worker");
        let args = expanded_args(objs, c, "cd-worker-0-x7k2p");
        let dir = flag(&args, "--data-cache").unwrap_or_else(|| {
            panic!("{overlay}: workers need --data-cache for remote data roots")
        });
        let job = find(objs, "Job", "cd-worker").expect("worker job");
        let (mount, vol) = mounted_volume(job, c, dir)
            .unwrap_or_else(|| panic!("{overlay}: nothing mounted at --data-cache {dir}"));
        assert_ne!(
            mount["readOnly"], true,
            "{overlay}: the data cache must be writable"
        );
        assert!(
            vol["emptyDir"].is_object()
                || vol["hostPath"].is_object()
                || vol["persistentVolumeClaim"].is_object(),
            "{overlay}: the data cache must be a volume that outlives tasks, not {vol}"
        );
    }
}

/// The Secret volume mounted at the directory of `file`, and the key it
/// projects there.
fn secret_file<'a>(obj: &'a Value, c: &'a Value, file: &str) -> (&'a str, String) {
    let (dir, name) = file.rsplit_once('/').expect("an absolute path");
    let (_, vol) =
        mounted_volume(obj, c, dir).unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    let secret = vol["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{dir} is not a Secret volume: {vol}"));
    let key = vol["secret"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["path"] == name)
        .and_then(|i| i["key"].as_str())
        .unwrap_or(name)
        .to_string();
    (secret, key)
}

#[test]
fn gpu_overlay_serves_grpc_over_tls_and_workers_verify_it() {
    let Some(objs) = render("gpu") else { return };
    let coord = find(objs, "StatefulSet", "cd-coordinator").expect("coordinator");
    let cc = container(objs, "StatefulSet", "cd-coordinator", "coordinator");
    let env = resolve_env(objs, cc, "cd-coordinator-0");
    let cert = env
        .get("CD_TLS_CERT")
        .expect("the coordinator serves TLS (CD_TLS_CERT)");
    let key = env.get("CD_TLS_KEY").expect("CD_TLS_KEY");
    let (cert_secret, cert_key) = secret_file(coord, cc, cert);
    let (key_secret, key_key) = secret_file(coord, cc, key);
    assert_eq!(
        (cert_key.as_str(), key_key.as_str()),
        ("tls.crt", "tls.key")
    );
    assert_eq!(cert_secret, key_secret);

    let job = find(objs, "Job", "cd-worker").expect("worker job");
    let wc = container(objs, "Job", "cd-worker", "worker");
    let args = expanded_args(objs, wc, "cd-worker-0-x7k2p");
    let addr = flag(&args, "--coordinator").expect("--coordinator");
    assert!(addr.starts_with("https://"), "workers must use TLS: {addr}");
    let wenv = resolve_env(objs, wc, "cd-worker-0-x7k2p");
    let ca = wenv
        .get("CD_TLS_CA")
        .expect("workers verify against a CA (CD_TLS_CA)");
    let (ca_secret, ca_key) = secret_file(job, wc, ca);
    assert_eq!((ca_secret, ca_key.as_str()), (cert_secret, "ca.crt"));
    let worker_vols = pod_spec(job).unwrap()["volumes"].to_string();
    assert!(
        !worker_vols.contains("tls.key"),
        "workers must not mount the coordinator's private key"
    );
}

#[test]
fn coordinator_is_one_replica_behind_a_service_and_a_disruption_budget() {
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        let sts = find(objs, "StatefulSet", "cd-coordinator")
            .unwrap_or_else(|| panic!("{overlay}: no coordinator"));
        assert_eq!(
            sts["spec"]["replicas"], 1,
            "{overlay}: exactly one coordinator may lease a sweep"
        );
        let labels = &sts["spec"]["template"]["metadata"]["labels"];
        let selects = |sel: &Value| {
            sel.as_object()
                .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
        };
        let pdb = find(objs, "PodDisruptionBudget", "cd-coordinator")
            .unwrap_or_else(|| panic!("{overlay}: no PDB"));
        assert!(
            selects(&pdb["spec"]["selector"]["matchLabels"]),
            "{overlay}: the PDB does not select the coordinator"
        );
        let svc = find(objs, "Service", "cd-coordinator")
            .unwrap_or_else(|| panic!("{overlay}: no coordinator Service"));
        assert!(
            selects(&svc["spec"]["selector"]),
            "{overlay}: the Service does not select the coordinator"
        );
        let c = container(objs, "StatefulSet", "cd-coordinator", "coordinator");
        let names: BTreeSet<&str> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let svc_ports: BTreeSet<&str> = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["targetPort"].as_str())
            .collect();
        assert_eq!(
            svc_ports,
            ["grpc", "http"].into(),
            "{overlay}: the Service should expose grpc and http"
        );
        assert!(
            svc_ports.is_subset(&names),
            "{overlay}: Service targets {svc_ports:?}, container has {names:?}"
        );
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert!(
                c[probe]["httpGet"].is_object(),
                "{overlay}: coordinator has no HTTP {probe}"
            );
        }
        // Workers find the coordinator through the Service's gRPC port.
        let w = container(objs, "Job", "cd-worker", "worker");
        let args = expanded_args(objs, w, "cd-worker-0-x7k2p");
        let grpc = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "grpc")
            .expect("grpc port");
        // Over TLS when the coordinator serves a certificate.
        let cc = container(objs, "StatefulSet", "cd-coordinator", "coordinator");
        let tls = resolve_env(objs, cc, "cd-coordinator-0").contains_key("CD_TLS_CERT");
        let want = format!(
            "{}://{}:{}",
            if tls { "https" } else { "http" },
            svc["metadata"]["name"].as_str().unwrap_or_default(),
            grpc["port"]
        );
        assert_eq!(
            flag(&args, "--coordinator"),
            Some(want.as_str()),
            "{overlay}: workers dial another address"
        );
    }
}

/// `stage_weights.py list` must name exactly the Hub models the coordinator's
/// own grid loader finds, so staging never misses a model the sweep needs.
#[test]
fn weight_stager_lists_the_hub_models_the_grid_loader_sees() {
    use cd_common::spec::ModelSource;
    let root = repo_root();
    let script = root.join("deploy/overlays/gpu/stage_weights.py");
    let tmp = tempfile::tempdir().unwrap();
    // The only test in this process (nextest): setting the environment is safe.
    std::env::set_var("CD_DATA_ROOT", unpinned_dataset_standins(tmp.path()));
    std::env::set_var("CD_HASH_CACHE", tmp.path().join("hashes"));
    for grid in [
        "grids/full.toml",
        "grids/quickstart.toml",
        "grids/llama-analysis.toml",
    ] {
        let path = root.join(grid);
        let loaded = cd_common::grid::Grid::load(&path).unwrap_or_else(|e| panic!("{grid}: {e}"));
        let mut want: Vec<String> = Vec::new();
        for t in &loaded.tasks {
            if let ModelSource::Hub { repo, revision } = &t.model.source {
                let l = match revision {
                    Some(r) => format!("{repo}@{r}"),
                    None => repo.clone(),
                };
                if !want.contains(&l) {
                    want.push(l);
                }
            }
        }
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args(["list", "--grid"])
            .arg(&path)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{grid}: stage_weights.py list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            got, want,
            "{grid}: the stager and the grid loader disagree on the Hub models"
        );
    }
}
