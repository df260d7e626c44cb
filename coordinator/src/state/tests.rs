//! The scheduler with made-up time: every transition, without sleeping.

use super::*;
use cd_common::spec::example_spec;

fn specs(n: usize, precision: Precision) -> Vec<TaskSpec> {
    (0..n)
        .map(|seed| {
            let mut s = example_spec();
            s.seed = seed as u64;
            s.precision = precision;
            s
        })
        .collect()
}

fn cpu() -> WorkerInfo {
    WorkerInfo::from_devices("h".into(), &[("cpu".into(), DeviceKind::Cpu, 64 << 30)])
}

fn gpu() -> WorkerInfo {
    WorkerInfo::from_devices("g".into(), &[("cuda:0".into(), DeviceKind::Cuda, 80 << 30)])
}

fn sched(n: usize) -> (Scheduler, Instant) {
    let t0 = Instant::now();
    let mut s = Scheduler::new(&specs(n, Precision::F32), 2, Duration::from_secs(10))
        .with_stall_timeouts(Duration::from_secs(100), Duration::from_secs(400));
    s.register("a", cpu(), t0);
    s.register("b", cpu(), t0);
    (s, t0)
}

fn lease(s: &mut Scheduler, w: &str, now: Instant) -> Granted {
    s.lease(w, "", now).unwrap().granted.expect("a lease")
}

fn beat<'a>(w: &'a str, lease: &'a str, done: u64) -> Heartbeat<'a> {
    Heartbeat {
        worker_id: w,
        lease,
        phase: TaskPhase::Extract,
        done,
        total: 10,
        tokens: done * 5,
    }
}

#[test]
fn a_lease_completes_once_and_only_by_its_holder() {
    let (mut s, t0) = sched(2);
    let g = lease(&mut s, "a", t0);
    let forged = s.complete("b", &g.lease_id, &g.task_id).unwrap_err();
    assert!(
        matches!(forged, StateError::NotYourLease { .. }),
        "{forged}"
    );
    let other_epoch = format!("00000000-{}", g.lease_id.split_once('-').unwrap().1);
    assert!(
        s.complete("a", &other_epoch, &g.task_id).is_err(),
        "another coordinator's lease"
    );
    assert_eq!(
        s.complete("a", &g.lease_id, &g.task_id),
        Ok(CompleteOutcome::Accepted)
    );
    assert_eq!(
        s.complete("b", "x", &g.task_id),
        Ok(CompleteOutcome::Duplicate)
    );
    assert_eq!(s.counts().completed, 1);
}

#[test]
fn asking_again_while_holding_a_lease_returns_it() {
    let (mut s, t0) = sched(3);
    let g1 = lease(&mut s, "a", t0);
    for _ in 0..10 {
        let g = lease(&mut s, "a", t0);
        assert_eq!((g.lease_id.as_str(), g.attempt), (g1.lease_id.as_str(), 1));
    }
    assert_eq!(s.counts().leased, 1, "a flood of requests takes one task");
}

#[test]
fn worker_faults_are_not_charged_and_quarantine_the_worker() {
    let (mut s, t0) = sched(1);
    for i in 0..workers::QUARANTINE_AFTER {
        let g = lease(&mut s, "a", t0);
        assert_eq!(g.attempt, 1, "fault {i} was not charged");
        let (id, out) = s.fail("a", &g.lease_id, "no data root", Fault::Worker, t0, 0);
        assert_eq!(id, Some(g.task_id.clone()));
        let last = i + 1 == workers::QUARANTINE_AFTER;
        assert!(
            matches!(out, FailOutcome::WorkerFault(_, Some(_)) if last)
                || matches!(out, FailOutcome::WorkerFault(_, None) if !last)
        );
    }
    let answer = s.lease("a", "", t0).unwrap();
    assert!(answer.granted.is_none());
    assert!(answer.quarantined.unwrap().0.contains("no data root"));
    // A healthy worker takes the cell and completes it.
    let g = lease(&mut s, "b", t0);
    assert_eq!(
        s.complete("b", &g.lease_id, &g.task_id),
        Ok(CompleteOutcome::Accepted)
    );
    assert_eq!(
        s.failures(&g.task_id).len(),
        3,
        "worker faults are recorded"
    );
    assert!(s.failures(&g.task_id).iter().all(|f| f.worker_fault));
    assert!(s.readmit("a"));
    assert!(s.lease("a", "", t0).unwrap().quarantined.is_none());
}

#[test]
fn task_faults_are_charged_until_attempts_run_out() {
    let (mut s, t0) = sched(1);
    let g = lease(&mut s, "a", t0);
    let (_, out) = s.fail(
        "a",
        &g.lease_id,
        "bad row",
        Fault::Task { permanent: false },
        t0,
        0,
    );
    assert!(matches!(out, FailOutcome::Requeued(_)));
    let g = lease(&mut s, "b", t0);
    assert_eq!(g.attempt, 2);
    let (_, out) = s.fail(
        "b",
        &g.lease_id,
        "bad row",
        Fault::Task { permanent: false },
        t0,
        0,
    );
    assert!(matches!(out, FailOutcome::Failed(_)));
    assert!(s.done());
    let (mut s, t0) = sched(1);
    let g = lease(&mut s, "a", t0);
    let (_, out) = s.fail(
        "a",
        &g.lease_id,
        "x",
        Fault::Task { permanent: true },
        t0,
        0,
    );
    assert!(
        matches!(out, FailOutcome::Failed(_)),
        "permanent fails at once"
    );
    // A report on a lease that is gone changes nothing.
    assert_eq!(
        s.fail("a", &g.lease_id, "x", Fault::Worker, t0, 0).1,
        FailOutcome::Stale
    );
}

#[test]
fn lapsed_leases_are_charged_and_their_holder_may_still_complete() {
    let (mut s, t0) = sched(1);
    let g = lease(&mut s, "a", t0);
    assert!(s
        .heartbeat(beat("a", &g.lease_id, 3), t0 + Duration::from_secs(5))
        .is_some());
    let reaped = s.reap(t0 + Duration::from_secs(16), 0);
    assert_eq!(reaped.len(), 1, "5 s + 10 s ttl have passed");
    assert!(s
        .heartbeat(beat("a", &g.lease_id, 4), t0 + Duration::from_secs(16))
        .is_none());
    // Pending again, nobody holds it: the old holder's result still counts.
    s.authorises("a", &g.lease_id, &g.task_id).unwrap();
    // Once another worker holds it, the old lease authorises nothing.
    let g2 = lease(&mut s, "b", t0 + Duration::from_secs(17));
    assert_eq!(g2.attempt, 2);
    assert!(s.complete("a", &g.lease_id, &g.task_id).is_err());
    assert_eq!(
        s.complete("b", &g2.lease_id, &g.task_id),
        Ok(CompleteOutcome::Accepted)
    );
}

#[test]
fn a_client_that_leases_and_vanishes_cannot_fail_a_cell() {
    let (mut s, t0) = sched(1);
    let ttl = Duration::from_secs(11);
    s.register("flood", cpu(), t0);
    // The same id leasing again and again, never heartbeating: never charged.
    let mut now = t0;
    for round in 0..5 {
        let g = lease(&mut s, "flood", now);
        assert_eq!(g.attempt, 1, "round {round}");
        now += ttl;
        s.reap(now, 0);
        s.readmit("flood");
    }
    // A worker that heartbeats and then goes silent is charged once; the same
    // worker lapsing again on the same cell is not charged twice.
    let g = lease(&mut s, "a", now);
    s.heartbeat(beat("a", &g.lease_id, 1), now);
    now += ttl;
    s.reap(now, 0);
    let g = lease(&mut s, "a", now);
    assert_eq!(g.attempt, 2);
    s.heartbeat(beat("a", &g.lease_id, 1), now);
    now += ttl;
    s.reap(now, 0);
    assert_eq!(lease(&mut s, "b", now).attempt, 2);
    assert_eq!(s.counts().failed, 0);
}

#[test]
fn a_cell_that_brings_down_every_worker_fails() {
    let (mut s, t0) = sched(1);
    let mut now = t0;
    for w in ["a", "b"] {
        let g = lease(&mut s, w, now);
        s.heartbeat(beat(w, &g.lease_id, 1), now);
        now += Duration::from_secs(11);
        s.reap(now, 0);
    }
    assert_eq!(
        s.counts().failed,
        1,
        "max_attempts (2) distinct workers lapsed"
    );
}

#[test]
fn each_phase_has_its_own_watchdog() {
    let (mut s, t0) = sched(1);
    let g = lease(&mut s, "a", t0);
    fn loading(lease: &str) -> Heartbeat<'_> {
        Heartbeat {
            phase: TaskPhase::LoadModel,
            done: 0,
            ..beat("a", lease, 0)
        }
    }
    // Loading a model reports no counts: 300 s of it is not a stall (its
    // limit is 400 s), where 100 s without progress in any other phase is.
    for sec in (5..=300).step_by(5) {
        let now = t0 + Duration::from_secs(sec);
        assert!(
            s.heartbeat(loading(&g.lease_id), now).is_some(),
            "loading expired at {sec} s"
        );
        assert!(s.reap(now, 0).is_empty(), "loading reaped at {sec} s");
    }
    // Loading that never ends is stopped at its own limit.
    for sec in (305..600).step_by(5) {
        let now = t0 + Duration::from_secs(sec);
        if s.heartbeat(loading(&g.lease_id), now).is_none() {
            assert!(sec > 400, "expired early at {sec} s");
            assert!(s.failures(&g.task_id)[0]
                .error
                .contains("no progress for 400 s in phase `load_model`"));
            return;
        }
        s.reap(now, 0);
    }
    panic!("a model load that never ends was never stopped");
}

#[test]
fn stalled_leases_expire_though_heartbeats_continue() {
    let (mut s, t0) = sched(1);
    let g = lease(&mut s, "a", t0);
    for sec in (5..200).step_by(5) {
        let now = t0 + Duration::from_secs(sec);
        if s.heartbeat(beat("a", &g.lease_id, 3), now).is_none() {
            assert!(sec > 100, "expired early at {sec} s");
            assert!(s.failures(&g.task_id)[0]
                .error
                .contains("no progress for 100 s"));
            return;
        }
        s.reap(now, 0);
    }
    panic!("a stalled lease never expired");
}

#[test]
fn cells_nobody_can_run_are_reported() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(&specs(2, Precision::Int8), 3, Duration::from_secs(10));
    assert!(
        s.unplaceable(t0).is_empty(),
        "no worker yet: nothing to say"
    );
    s.register("gpu", gpu(), t0);
    // LLM.int8 is not a verified CUDA pair: the GPU worker gets nothing.
    let answer = s.lease("gpu", "", t0).unwrap();
    assert!(answer.granted.is_none() && answer.nothing_for_worker);
    assert_eq!(
        s.unplaceable(t0),
        vec![("m".to_string(), Precision::Int8, 2)]
    );
    assert!(s.stuck(t0));
    s.register("cpu", cpu(), t0);
    assert!(s.unplaceable(t0).is_empty());
    assert!(lease(&mut s, "cpu", t0).attempt == 1);
}

#[test]
fn grid_devices_restrict_who_leases() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(&specs(1, Precision::F32), 3, Duration::from_secs(10))
        .with_devices(&[DeviceKind::Cuda]);
    s.register("cpu", cpu(), t0);
    assert!(s.lease("cpu", "", t0).unwrap().nothing_for_worker);
    s.register("gpu", gpu(), t0);
    assert!(s.lease("gpu", "", t0).unwrap().granted.is_some());
}

#[test]
fn a_restart_keeps_the_leases_in_flight() {
    let (mut s, t0) = sched(3);
    let ga = lease(&mut s, "a", t0);
    let gb = lease(&mut s, "b", t0);
    assert_eq!(
        s.complete("b", &gb.lease_id, &gb.task_id),
        Ok(CompleteOutcome::Accepted)
    );
    let saved = s.persisted_leases();
    assert_eq!(saved.leases.len(), 1);
    // A new process: same grid, completed cells from the store, then the leases.
    let (mut r, _) = sched(3);
    r.restore_completed([&gb.task_id]);
    assert_eq!(r.restore_leases(&saved, t0), 1);
    assert_eq!((r.counts().leased, r.counts().completed), (1, 1));
    let later = t0 + Duration::from_secs(3);
    assert!(
        r.heartbeat(beat("a", &ga.lease_id, 1), later).is_some(),
        "the worker re-attaches"
    );
    assert_eq!(
        r.complete("a", &ga.lease_id, &ga.task_id),
        Ok(CompleteOutcome::Accepted)
    );
    let fresh = lease(&mut r, "b", later);
    assert_ne!(fresh.lease_id, ga.lease_id, "new leases do not reuse ids");
}

#[test]
fn dashboard_shows_workers_rates_and_bounded_errors() {
    let (mut s, t0) = sched(2);
    let g = lease(&mut s, "a", t0);
    s.heartbeat(beat("a", &g.lease_id, 0), t0);
    s.heartbeat(beat("a", &g.lease_id, 4), t0 + Duration::from_secs(2));
    let long = format!("<script>{}</script>", "x".repeat(2000));
    let gb = lease(&mut s, "b", t0);
    s.fail(
        "b",
        &gb.lease_id,
        &long,
        Fault::Task { permanent: true },
        t0,
        0,
    );
    let d = s.dashboard(t0 + Duration::from_secs(2));
    let a = d.workers.iter().find(|w| w.id == "a").unwrap();
    assert_eq!((a.state, a.examples_done), ("busy", Some(4)));
    assert_eq!(a.examples_per_second, 2.0);
    assert_eq!(d.failures.len(), 1);
    assert!(d.failures[0].last_error.chars().count() <= views::MAX_SHOWN + 1);
    assert_eq!(d.models[0].total, 2);
}
