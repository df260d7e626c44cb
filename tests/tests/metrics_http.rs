//! The coordinator's Prometheus endpoint during a real sweep: behind the
//! token, named by the conventions (`cd_` prefix, counters `_total`,
//! durations `_seconds`), and moving as cells are leased and completed.

use cd_tests::fixtures::*;
use cd_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Samples of a Prometheus text exposition: `name{labels}` → value, and
/// each metric family's type.
fn parse(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(ty)) = (it.next(), it.next()) {
                types.insert(name.to_string(), ty.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let (key, value) = line.rsplit_once(' ').expect("`name value` sample");
            samples.insert(key.to_string(), value.parse().expect("a number"));
        }
    }
    (samples, types)
}

#[test]
fn metrics_are_guarded_conventional_and_move_during_a_sweep() {
    let Some(models) = tiny_models() else { return };
    let grid = tiny_grid(
        &models,
        &["llama_gqa_rope3"],
        200,
        &["none", "prefix-aaa-bbb"],
        &[0, 1],
    );
    let mut cluster = ClusterBuilder::new(grid).start().unwrap();
    let (code, _) = cluster.http_get_with("/metrics", None).unwrap();
    assert_eq!(code, 401, "/metrics answered without the token");
    let (code, _) = cluster.http_get_with("/metrics", Some("wrong")).unwrap();
    assert_eq!(code, 401, "/metrics answered a wrong token");

    let scrape = |c: &Cluster| {
        let (code, body) = c.http_get("/metrics").unwrap();
        assert_eq!(code, 200, "{body}");
        parse(&body)
    };
    let (before, types) = scrape(&cluster);
    assert!(!types.is_empty(), "no metric families");
    for (name, ty) in &types {
        assert!(name.starts_with("cd_"), "`{name}` lacks the cd_ prefix");
        if ty == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter `{name}` must end in _total"
            );
        }
        if ty == "histogram" {
            assert!(
                name.ends_with("_seconds"),
                "histogram `{name}` must be in _seconds"
            );
        }
    }
    assert_eq!(before["cd_tasks{state=\"pending\"}"], 4.0);
    assert_eq!(before["cd_leases_granted_total"], 0.0);

    cluster.start_worker("w0", &[]).unwrap();
    cluster
        .wait_for_status("one cell complete", Duration::from_secs(240), |s| {
            s.completed >= 1
        })
        .unwrap();
    let (during, _) = scrape(&cluster);
    assert!(during["cd_leases_granted_total"] >= 1.0);
    assert!(during["cd_tasks_completed_total"] >= 1.0);
    assert_eq!(during["cd_workers"], 1.0);

    let done = cluster
        .wait_for_sweep_done(Duration::from_secs(240))
        .unwrap();
    let (after, _) = scrape(&cluster);
    assert_eq!(after["cd_tasks_completed_total"], done.total as f64);
    assert_eq!(after["cd_tasks{state=\"completed\"}"], done.total as f64);
    assert_eq!(after["cd_tasks{state=\"pending\"}"], 0.0);
    assert!(after["cd_leases_granted_total"] >= done.total as f64);
    assert!(
        after["cd_lease_request_seconds_count"] >= after["cd_leases_granted_total"],
        "every lease request is timed"
    );
    assert!(after["cd_leases_granted_total"] > before["cd_leases_granted_total"]);
    assert!(after["cd_up_seconds"] > before["cd_up_seconds"]);
}
