//! Dockerfile rules, checked without Docker (CI also runs hadolint on them in
//! scripts/ci/deploy.sh). The rules:
//!
//! 1. every `FROM` pins its image by tag and digest (`name:tag@sha256:<64 hex>`), never `latest`;
//! 2. multi-stage: the final stage copies the binary from a build stage and has no toolchain;
//! 3. the final stage runs as a numeric non-root `USER`;
//! 4. `ENTRYPOINT` is exec form and names the binary the final stage copies in;
//! 5. binaries are built with `cargo build --release --locked -p <crate>`;
//! 6. no `ADD` (remote or archive magic), no `curl | sh` installers;
//! 7. `apt-get install` uses `--no-install-recommends` and removes the package lists;
//! 8. the coordinator and CPU worker images contain nothing of CUDA; the GPU worker
//!    builds on an NVIDIA CUDA `-devel` image with `--features cuda` and a
//!    `CUDA_COMPUTE_CAP` build argument, and runs on the `-runtime` image of the same
//!    CUDA version and OS.

mod deploy_support;

use deploy_support::repo_root;

/// One `FROM` stage: its image reference and the instructions under it.
#[derive(Debug)]
struct Stage {
    image: String,
    lines: Vec<String>,
}

/// Logical instructions (continuation lines joined, comments dropped), split by stage.
fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                logical.push(std::mem::take(&mut cur));
            }
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for l in logical {
        if let Some(rest) = l.strip_prefix("FROM ") {
            let image = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            out.push(Stage {
                image,
                lines: Vec::new(),
            });
        } else if let Some(s) = out.last_mut() {
            s.lines.push(l);
        }
    }
    out
}

fn read(name: &str) -> Vec<Stage> {
    let path = repo_root().join("deploy/docker").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    stages(&text)
}

fn digest_pinned(image: &str) -> bool {
    let Some((name, digest)) = image.split_once("@sha256:") else {
        return false;
    };
    let tag = name
        .rsplit('/')
        .next()
        .and_then(|l| l.split_once(':'))
        .map(|(_, t)| t);
    digest.len() == 64
        && digest.chars().all(|c| c.is_ascii_hexdigit())
        && tag.is_some_and(|t| !t.is_empty() && t != "latest")
}

/// Rules 1-7 for one Dockerfile producing `binary` from crate `krate`.
fn check_common(file: &str, krate: &str, binary: &str) -> Vec<Stage> {
    let st = read(file);
    assert!(
        st.len() >= 2,
        "{file}: expected a multi-stage build, found {} stage(s)",
        st.len()
    );
    for s in &st {
        assert!(
            digest_pinned(&s.image),
            "{file}: FROM {} is not pinned by tag and digest",
            s.image
        );
        for l in &s.lines {
            assert!(!l.starts_with("ADD "), "{file}: use COPY, not `{l}`");
            assert!(
                !(l.contains("curl") && l.contains("| sh")),
                "{file}: no curl|sh installers: `{l}`"
            );
            if l.contains("apt-get install") {
                assert!(
                    l.contains("--no-install-recommends"),
                    "{file}: `{l}` lacks --no-install-recommends"
                );
                assert!(
                    l.contains("rm -rf /var/lib/apt/lists"),
                    "{file}: `{l}` keeps the apt lists"
                );
            }
        }
    }
    let build = st
        .iter()
        .flat_map(|s| &s.lines)
        .find(|l| l.contains("cargo build"))
        .unwrap_or_else(|| panic!("{file}: no cargo build"));
    for want in ["--release", "--locked", &format!("-p {krate}")] {
        assert!(build.contains(want), "{file}: `cargo build` lacks {want}");
    }
    let last = st.last().expect("a stage");
    assert!(
        !last.lines.iter().any(|l| l.contains("cargo")),
        "{file}: the final stage must not build"
    );
    let user = last
        .lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap_or_else(|| panic!("{file}: the final stage sets no USER"));
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "{file}: USER {user} must be a numeric non-root uid"
    );
    let target = format!("/usr/local/bin/{binary}");
    let entry = last
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .unwrap_or_else(|| panic!("{file}: no ENTRYPOINT"));
    assert_eq!(
        entry,
        format!("[\"{target}\"]"),
        "{file}: ENTRYPOINT should exec {target}"
    );
    assert!(
        last.lines
            .iter()
            .any(|l| l.starts_with("COPY --from=") && l.ends_with(&target)),
        "{file}: the final stage does not copy {target} from a build stage"
    );
    st
}

#[test]
fn coordinator_image_is_small_non_root_and_without_cuda() {
    let st = check_common("coordinator.Dockerfile", "cd-coordinator", "cd-coordinator");
    assert!(
        st.iter().all(|s| !s.image.contains("cuda")),
        "the coordinator image must not involve CUDA"
    );
    assert!(
        st.last().expect("stage").image.contains("distroless"),
        "the coordinator runs on a distroless base"
    );
}

#[test]
fn cpu_worker_image_has_no_cuda() {
    let st = check_common("worker-cpu.Dockerfile", "cd-worker", "cd-worker");
    assert!(
        st.iter().all(|s| !s.image.contains("cuda")),
        "the CPU worker image must not involve CUDA"
    );
    assert!(
        !st.iter()
            .flat_map(|s| &s.lines)
            .any(|l| l.contains("--features cuda")),
        "the CPU worker must be built without the cuda feature"
    );
}

/// `13.0.1-devel-ubuntu24.04` -> ("13.0.1", "devel", "ubuntu24.04").
fn cuda_tag(image: &str) -> Option<(String, String, String)> {
    let name = image.split('@').next()?;
    let (repo, tag) = name.rsplit_once(':')?;
    if !repo.ends_with("nvidia/cuda") {
        return None;
    }
    let mut parts = tag.splitn(3, '-');
    Some((
        parts.next()?.into(),
        parts.next()?.into(),
        parts.next()?.into(),
    ))
}

#[test]
fn gpu_worker_builds_on_cuda_devel_and_runs_on_the_matching_runtime() {
    let st = check_common("worker.Dockerfile", "cd-worker", "cd-worker");
    let build = st
        .iter()
        .find(|s| s.lines.iter().any(|l| l.contains("cargo build")))
        .expect("a build stage");
    let (bver, bflavor, bos) =
        cuda_tag(&build.image).expect("the build stage is an nvidia/cuda image");
    assert_eq!(
        bflavor, "devel",
        "build on a CUDA devel image (nvcc for candle's kernels)"
    );
    let (rver, rflavor, ros) = cuda_tag(&st.last().expect("stage").image)
        .expect("the final stage is an nvidia/cuda image");
    assert_eq!(rflavor, "runtime", "run on a CUDA runtime image");
    assert_eq!(
        (bver.as_str(), bos.as_str()),
        (rver.as_str(), ros.as_str()),
        "devel and runtime images must match"
    );
    assert!(
        bver.starts_with("13.0."),
        "CUDA stays on 13.0.x (newer PTX is refused by 580-series drivers)"
    );
    let cargo = build
        .lines
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("cargo build");
    assert!(
        cargo.contains("--features cuda"),
        "the GPU worker must be built with --features cuda"
    );
    assert!(
        build
            .lines
            .iter()
            .any(|l| l.starts_with("ARG CUDA_COMPUTE_CAP")),
        "the build stage must take CUDA_COMPUTE_CAP as a build argument"
    );
    assert!(
        build
            .lines
            .iter()
            .any(|l| l.starts_with("ENV ") && l.contains("CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}")),
        "CUDA_COMPUTE_CAP must reach cargo's environment"
    );
}

#[test]
fn the_pin_rule_can_fail() {
    assert!(!digest_pinned("rust:1.95-slim-bookworm"));
    assert!(!digest_pinned(&format!(
        "rust:latest@sha256:{}",
        "0".repeat(64)
    )));
    assert!(!digest_pinned(&format!("rust@sha256:{}", "0".repeat(64))));
    assert!(digest_pinned(&format!(
        "rust:1.95-slim-bookworm@sha256:{}",
        "0".repeat(64)
    )));
    let st = stages("FROM a:1@sha256:x AS b\nRUN x \\\n  y\n# c\nFROM d:2\nUSER 1\n");
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].lines, vec!["RUN x  y".to_string()]);
}
