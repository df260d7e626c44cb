//! Every key of a sweep in the store, relative to the store's root: the one
//! place a key is spelled.
//!
//! Layout under the URL's root:
//! ```text
//! <sweep>/tasks/<task-id>/spec.json              the TaskSpec (canonical JSON)
//! <sweep>/tasks/<task-id>/features.safetensors   [N, L, d] features (optional, multipart)
//! <sweep>/tasks/<task-id>/mc_scores.safetensors  per-item candidate scores (multiple choice)
//! <sweep>/tasks/<task-id>/metrics.json           written LAST: its presence = task complete
//! <sweep>/state/failures/<task-id>.json          failure history kept by the coordinator
//! <sweep>/state/schema.json                      the spec schema the sweep's ids follow
//! <sweep>/state/grid.json                        task ids of the grid last served
//! <sweep>/state/leases.json                      leases in flight (a restart keeps them)
//! <sweep>/state/coordinator.lock                 the coordinator serving the sweep
//! <sweep>/tasks/<task-id>/attempts/<a>/...       an attempt's features before it wins
//! <sweep>/report/...                             tables, figures, index.html
//! ```
//!

use crate::spec::TaskId;

/// `<sweep>/tasks`: the prefix of every task's files.
pub fn tasks(sweep: &str) -> String {
    format!("{sweep}/tasks")
}

/// `<sweep>/tasks/<id>/`: one task's directory.
pub(crate) fn task_dir(sweep: &str, id: &TaskId) -> String {
    format!("{sweep}/tasks/{id}/")
}

/// A task's spec, `spec.json`.
pub fn spec(sweep: &str, id: &TaskId) -> String {
    format!("{sweep}/tasks/{id}/spec.json")
}

/// A task's features, `features.safetensors`.
pub fn features(sweep: &str, id: &TaskId) -> String {
    format!("{sweep}/tasks/{id}/features.safetensors")
}

/// A multiple-choice task's per-item scores, `mc_scores.safetensors`.
pub fn mc_scores(sweep: &str, id: &TaskId) -> String {
    format!("{sweep}/tasks/{id}/mc_scores.safetensors")
}

/// A task's `metrics.json`, the completion marker.
pub fn metrics(sweep: &str, id: &TaskId) -> String {
    format!("{sweep}/tasks/{id}/metrics.json")
}

/// An attempt's features, before the attempt wins.
pub fn attempt_features(sweep: &str, id: &TaskId, attempt: &str) -> String {
    format!("{sweep}/tasks/{id}/attempts/{attempt}/features.safetensors")
}

/// The task whose `metrics.json` a listed key is, if it is one.
pub(crate) fn completed_task(sweep: &str, key: &str) -> Option<TaskId> {
    let rest = key.strip_prefix(sweep)?.strip_prefix("/tasks/")?;
    let (id, file) = rest.split_once('/')?;
    (file == "metrics.json").then(|| TaskId(id.to_string()))
}

/// Whether a listed key is an attempt's object (under `attempts/`), not the
/// cell's own.
pub(crate) fn is_attempt_key(key: &str) -> bool {
    key.contains("/attempts/")
}

/// Whether a listed key is a features file (the cell's or an attempt's).
pub(crate) fn is_features_key(key: &str) -> bool {
    key.ends_with("/features.safetensors")
}

/// `<sweep>/state/failures`: the prefix of the failure histories.
pub fn failures(sweep: &str) -> String {
    format!("{sweep}/state/failures")
}

/// One task's failure history, kept by the coordinator.
pub fn failure(sweep: &str, id: &TaskId) -> String {
    format!("{sweep}/state/failures/{id}.json")
}

/// The spec schema the sweep's task ids follow.
pub fn schema(sweep: &str) -> String {
    format!("{sweep}/state/schema.json")
}

/// The task ids of the grid last served.
pub(crate) fn grid_ids(sweep: &str) -> String {
    format!("{sweep}/state/grid.json")
}

/// The leases in flight, which a restarted coordinator keeps.
pub fn leases(sweep: &str) -> String {
    format!("{sweep}/state/leases.json")
}

/// The lock of the coordinator serving the sweep.
pub(crate) fn coordinator_lock(sweep: &str) -> String {
    format!("{sweep}/state/coordinator.lock")
}

/// `<sweep>/report`: the prefix of the rendered report.
pub fn report(sweep: &str) -> String {
    format!("{sweep}/report")
}

/// One file of the report (`index.html`, `tables/…`, `figures/…`).
pub fn report_file(sweep: &str, name: &str) -> String {
    format!("{sweep}/report/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_metrics_key_names_its_task_and_nothing_else_does() {
        let id = TaskId("0123456789abcdef".into());
        assert_eq!(completed_task("s", &metrics("s", &id)), Some(id.clone()));
        assert_eq!(completed_task("s", &spec("s", &id)), None);
        assert_eq!(completed_task("s2", &metrics("s", &id)), None);
        assert_eq!(completed_task("s", &metrics("s2", &id)), None);
        assert_eq!(
            completed_task(
                "s",
                &format!("{}attempts/a/metrics.json", task_dir("s", &id))
            ),
            None
        );
    }
}
