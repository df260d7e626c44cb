//! gRPC over TLS with real processes: a coordinator serving a certificate
//! signed by a private CA (as a cert-manager Secret mounts it in the `gpu`
//! overlay), workers that verify it, and workers that do not trust it or
//! speak plaintext getting no work.

use cd_tests::fixtures::*;
use cd_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::Path;
use std::time::Duration;

const DOMAIN: &str = "cd-coordinator.concept-depth.svc";

/// Write a CA and a certificate for [`DOMAIN`] it signed; returns the files.
fn issue(dir: &Path, name: &str) -> TlsFiles {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![DOMAIN.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{name}-tls.crt")),
        key: dir.join(format!("{name}-tls.key")),
        ca: dir.join(format!("{name}-ca.crt")),
        domain: DOMAIN.into(),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(&files.ca, ca.pem()).unwrap();
    files
}

#[test]
fn a_sweep_over_tls_completes_and_untrusting_or_plaintext_workers_get_nothing() {
    let Some(models) = tiny_models() else { return };
    let certs = tempfile::tempdir().unwrap();
    let tls = issue(certs.path(), "cluster");
    let rogue = issue(certs.path(), "rogue");
    let grid = tiny_grid(&models, &["llama_gqa_rope3"], 40, &["none"], &[0, 1]);
    let mut cluster = ClusterBuilder::new(grid).tls(tls).start().unwrap();

    // A worker that trusts another CA, and one that speaks plaintext.
    cluster
        .start_worker(
            "untrusting",
            &[
                "--tls-ca",
                rogue.ca.to_str().unwrap(),
                "--tls-domain",
                DOMAIN,
                "--give-up-after-secs",
                "3",
            ],
        )
        .unwrap();
    let plain = format!("http://127.0.0.1:{}", cluster.grpc_port);
    cluster
        .start_worker(
            "plaintext",
            &["--coordinator", &plain, "--give-up-after-secs", "3"],
        )
        .unwrap();
    for (id, code, why) in [
        ("untrusting", worker_exit::UNREACHABLE, "UnknownIssuer"),
        ("plaintext", worker_exit::CONFIG, "use an https:// address"),
    ] {
        let st = cluster
            .wait_worker_exit(id, Duration::from_secs(60))
            .unwrap();
        let log = std::fs::read_to_string(&cluster.worker(id).log).unwrap();
        assert_eq!(
            st.code(),
            Some(code),
            "worker `{id}` cannot work with a coordinator it does not trust or speak to:\n{log}"
        );
        assert!(
            log.contains(why),
            "worker `{id}` should say `{why}`:\n{log}"
        );
    }
    let s = cluster.status().unwrap();
    assert_eq!(
        (s.leased, s.completed, s.workers),
        (0, 0, 0),
        "a worker without a verified TLS session got work: {s:?}"
    );

    cluster.start_worker("w0", &[]).unwrap();
    assert_sweep_completes(&cluster, Duration::from_secs(240));
    assert_every_cell_once(&cluster);
    let st = cluster
        .wait_worker_exit("w0", Duration::from_secs(60))
        .unwrap();
    assert_eq!(st.code(), Some(worker_exit::OK));
}
