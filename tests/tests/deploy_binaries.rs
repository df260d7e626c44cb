//! The manifests against the real binaries: the exact args of every container
//! parse with `cd-coordinator`'s and `cd-worker`'s own command lines, the
//! grids the overlays ship validate, and the coordinator's probes get answers
//! from a running `cd-coordinator` started as the pod would start it.

mod deploy_support;

use cd_tests::{free_port, unpinned_dataset_standins};
use deploy_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const POD: &str = "cd-worker-0-x7k2p";

/// Run `bin args... --help`: clap parses (and validates) every flag before
/// the `--help` that ends the list, so success means the args are accepted.
fn parses(bin: &Path, args: &[String]) -> Result<(), String> {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("Usage:") {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?} --help: {}\n{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn container_args_parse_with_the_binaries_own_command_lines() {
    let (Some(coord), Some(worker)) = (workspace_bin("cd-coordinator"), workspace_bin("cd-worker"))
    else {
        return;
    };
    // The method can fail: a flag the binaries do not have is refused.
    let bogus = vec!["--no-such-flag=1".to_string()];
    assert!(
        parses(&coord, &bogus).is_err(),
        "cd-coordinator accepted an unknown flag"
    );
    assert!(
        parses(&worker, &bogus).is_err(),
        "cd-worker accepted an unknown flag"
    );
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        let c = container(objs, "StatefulSet", "cd-coordinator", "coordinator");
        let args = expanded_args(objs, c, "cd-coordinator-0");
        assert!(
            !args.iter().any(|a| a.contains("$(")),
            "{overlay}: unresolved variable in {args:?}"
        );
        parses(&coord, &args).unwrap_or_else(|e| panic!("{overlay}: coordinator args: {e}"));
        let w = container(objs, "Job", "cd-worker", "worker");
        let args = expanded_args(objs, w, POD);
        assert!(
            !args.iter().any(|a| a.contains("$(")),
            "{overlay}: unresolved variable in {args:?}"
        );
        parses(&worker, &args).unwrap_or_else(|e| panic!("{overlay}: worker args: {e}"));
    }
}

/// The container's environment without Secret placeholders, as a child process env.
fn plain_env(objs: &[Value], c: &Value, pod: &str) -> BTreeMap<String, String> {
    resolve_env(objs, c, pod)
        .into_iter()
        .filter(|(_, v)| !v.starts_with("<secret "))
        .collect()
}

#[test]
fn shipped_grids_validate_with_the_coordinators_settings() {
    let Some(coord) = workspace_bin("cd-coordinator") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = unpinned_dataset_standins(tmp.path());
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        let c = container(objs, "StatefulSet", "cd-coordinator", "coordinator");
        let grid = repo_root().join(format!("deploy/overlays/{overlay}/grid.toml"));
        // The overlays read data from S3, out of reach here: stand-ins of the
        // unpinned datasets let the coordinator hash them.
        let mut env = plain_env(objs, c, "cd-coordinator-0");
        env.insert("CD_DATA_ROOT".into(), data.display().to_string());
        env.insert(
            "CD_HASH_CACHE".into(),
            tmp.path().join("hashes").display().to_string(),
        );
        let out = Command::new(&coord)
            .args(["validate", "--grid"])
            .arg(&grid)
            .env_clear()
            .envs(env)
            .output()
            .expect("run cd-coordinator validate");
        assert!(
            out.status.success(),
            "{overlay}: cd-coordinator validate --grid {} failed:\n{}{}",
            grid.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `GET path` over plain HTTP/1.1; the status code, or `None` if nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    http_status_with_token(port, path, None)
}

/// The status code of a GET, sending `Authorization: Bearer <token>` if given.
fn http_status_with_token(port: u16, path: &str, token: Option<&str>) -> Option<u16> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Paths of `curl ... http://127.0.0.1:8080/PATH` in deploy/README.md (the
/// coordinator's HTTP port, port-forwarded), each with whether the line sends
/// the bearer token.
fn guide_http_paths() -> Vec<(String, bool)> {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/README.md")).expect("deploy/README.md");
    let paths: Vec<(String, bool)> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("curl "))
        .filter_map(|l| {
            let rest = l.split("http://127.0.0.1:8080").nth(1)?;
            let path = rest.split_whitespace().next().unwrap_or_default();
            Some((path.to_string(), l.contains("Authorization: Bearer")))
        })
        .collect();
    assert!(
        !paths.is_empty(),
        "deploy/README.md shows no curl of the coordinator's HTTP port"
    );
    paths
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The port number a probe's `port` (a name or a number) means for container `c`.
fn container_port(c: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("port is a name or a number");
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// Lay out the pod's ConfigMap and Secret volumes under `root` as the kubelet
/// would mount them; returns (mountPath, host dir) pairs.
fn mount_volumes(objs: &[Value], owner: &Value, c: &Value, root: &Path) -> Vec<(String, PathBuf)> {
    let volumes = pod_spec(owner).expect("pod")["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let path = m["mountPath"].as_str().expect("mountPath").to_string();
        let dir = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("mount dir");
        let vol = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("mounted volume declared");
        if let Some(cm) = vol["configMap"]["name"].as_str() {
            let cm =
                find(objs, "ConfigMap", cm).unwrap_or_else(|| panic!("missing ConfigMap {cm}"));
            for (k, v) in cm["data"].as_object().into_iter().flatten() {
                std::fs::write(dir.join(k), v.as_str().unwrap_or_default())
                    .expect("write configmap file");
            }
        } else if vol["secret"]["secretName"] == "cd-worker-token" {
            std::fs::write(dir.join("token"), "deploy-test-token\n").expect("write token");
        } else if vol["secret"]["secretName"] == "cd-coordinator-tls" {
            // What cert-manager would put there: a certificate for the
            // Service's names, its key and the CA (here the certificate itself).
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["cd-coordinator".to_string()])
                .expect("params")
                .self_signed(&key)
                .expect("certificate");
            for (file, text) in [
                ("tls.crt", cert.pem()),
                ("tls.key", key.serialize_pem()),
                ("ca.crt", cert.pem()),
            ] {
                std::fs::write(dir.join(file), text).expect("write TLS file");
            }
        }
        mounts.push((path, dir));
    }
    mounts
}

#[test]
fn probes_get_answers_from_the_real_coordinator() {
    let Some(coord) = workspace_bin("cd-coordinator") else {
        return;
    };
    for overlay in OVERLAYS {
        let Some(objs) = render(overlay) else { return };
        let owner = find(objs, "StatefulSet", "cd-coordinator").expect("coordinator");
        let c = container(objs, "StatefulSet", "cd-coordinator", "coordinator");
        let args = expanded_args(objs, c, "cd-coordinator-0");

        // The probes must target the port the binary's --http-listen binds.
        let http_listen = flag(&args, "--http-listen").expect("--http-listen in args");
        let http_port: u64 = http_listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let grpc_listen = flag(&args, "--listen").expect("--listen in args");
        let grpc_port: u64 = grpc_listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        assert_eq!(
            container_port(c, &"grpc".into()),
            grpc_port,
            "{overlay}: grpc containerPort != --listen"
        );
        let mut probes = Vec::new();
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let get = &c[probe]["httpGet"];
            assert_eq!(
                container_port(c, &get["port"]),
                http_port,
                "{overlay}: {probe} is not on --http-listen's port"
            );
            probes.push((probe, get["path"].as_str().expect("probe path").to_string()));
        }

        // Start the binary as the pod would: same flags, the volumes laid out
        // under a temp root, local ports, and a file:// store instead of S3.
        let tmp = tempfile::tempdir().expect("tempdir");
        let mounts = mount_volumes(objs, owner, c, tmp.path());
        let (grpc, http) = (free_port(), free_port());
        let store = format!("file://{}", tmp.path().join("store").display());
        std::fs::create_dir_all(tmp.path().join("store")).expect("store dir");
        let local_args: Vec<String> = args
            .iter()
            .map(|a| {
                let (name, value) = a.split_once('=').unwrap_or((a.as_str(), ""));
                let value = match name {
                    "--listen" => format!("127.0.0.1:{grpc}"),
                    "--http-listen" => format!("127.0.0.1:{http}"),
                    "--store" => store.clone(),
                    _ => mounts
                        .iter()
                        .find_map(|(m, dir)| {
                            value
                                .strip_prefix(m.as_str())
                                .map(|rest| format!("{}{rest}", dir.display()))
                        })
                        .unwrap_or_else(|| value.to_string()),
                };
                if a.contains('=') {
                    format!("{name}={value}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let mut env = plain_env(objs, c, "cd-coordinator-0");
        // Paths in the environment (TLS files) point into the mounts too.
        for value in env.values_mut() {
            if let Some(local) = mounts.iter().find_map(|(m, dir)| {
                value
                    .strip_prefix(m.as_str())
                    .map(|rest| format!("{}{rest}", dir.display()))
            }) {
                *value = local;
            }
        }
        env.insert("CD_STORE".into(), store.clone());
        let data = unpinned_dataset_standins(tmp.path());
        env.insert("CD_DATA_ROOT".into(), data.display().to_string());
        env.insert(
            "CD_HASH_CACHE".into(),
            tmp.path().join("hashes").display().to_string(),
        );
        let log = std::fs::File::create(tmp.path().join("coordinator.log")).expect("log");
        let child = Command::new(&coord)
            .args(&local_args)
            .env_clear()
            .envs(&env)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start cd-coordinator");
        let mut child = KillOnDrop(child);

        let deadline = Instant::now() + Duration::from_secs(60);
        for (probe, path) in &probes {
            loop {
                if let Some(200) = http_status(http, path) {
                    break;
                }
                let exited = child.0.try_wait().expect("wait");
                let log =
                    std::fs::read_to_string(tmp.path().join("coordinator.log")).unwrap_or_default();
                assert!(
                    exited.is_none(),
                    "{overlay}: cd-coordinator {local_args:?} exited {exited:?}:\n{log}"
                );
                assert!(
                    Instant::now() < deadline,
                    "{overlay}: {probe} GET {path} never answered 200:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // The endpoints the operator's guide tells people to curl answer too.
        let token = "deploy-test-token";
        for (path, with_token) in guide_http_paths() {
            assert_eq!(
                http_status_with_token(http, &path, with_token.then_some(token)),
                Some(200),
                "{overlay}: deploy/README.md curls {path}, which is not served as shown"
            );
            if with_token {
                assert_eq!(
                    http_status(http, &path),
                    Some(401),
                    "{overlay}: {path} answers without the token"
                );
            }
        }
        // And a path the binary does not serve is not 200: the check can fail.
        assert_ne!(
            http_status(http, "/no-such-endpoint"),
            Some(200),
            "{overlay}: any path answers 200"
        );
    }
}
