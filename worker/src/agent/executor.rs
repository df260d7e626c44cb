//! The thread that runs tasks and owns the loaded model.
//!
//! Forward passes and probe fits are long CPU/GPU-bound calls, so they run on
//! one dedicated thread rather than on the async runtime; the model stays
//! loaded there between tasks.

use crate::pipeline::{Outcome, Pipeline, PipelineError, Progress, TaskContext};
use cd_common::spec::TaskSpec;
use cd_common::storage::Store;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A task's result and the model the executor holds afterwards.
pub struct Done {
    /// The task's result.
    pub result: Result<Outcome, PipelineError>,
    /// Display name of the model loaded after the task.
    pub loaded_model: Option<String>,
}

struct Job {
    spec: TaskSpec,
    store: Store,
    progress: Arc<Progress>,
    attempt: String,
    reply: oneshot::Sender<Done>,
}

/// Handle on the executor thread.
pub(crate) struct Executor {
    jobs: mpsc::Sender<Job>,
}

impl Executor {
    /// Start the thread; storage calls block on `runtime`.
    pub fn spawn(pipeline: Pipeline, runtime: tokio::runtime::Handle) -> std::io::Result<Executor> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cd-executor".into())
            .spawn(move || {
                let mut pipeline = pipeline;
                for job in rx {
                    let ctx = TaskContext {
                        store: &job.store,
                        runtime: &runtime,
                        progress: &job.progress,
                        attempt: &job.attempt,
                    };
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        pipeline.execute(&job.spec, &ctx)
                    }));
                    let result = match result {
                        Ok(r) => r,
                        Err(panic) => {
                            // The model may be half-updated: load it afresh next time.
                            pipeline.unload();
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "unknown panic".into());
                            Err(PipelineError::Scratch(format!("task panicked: {msg}")))
                        }
                    };
                    let loaded_model = pipeline.loaded_model().map(str::to_string);
                    let _ = job.reply.send(Done {
                        result,
                        loaded_model,
                    });
                }
            })?;
        Ok(Executor { jobs })
    }

    /// Queue a task; the receiver resolves when it is done.
    pub fn submit(
        &self,
        spec: TaskSpec,
        store: Store,
        progress: Arc<Progress>,
        attempt: String,
    ) -> oneshot::Receiver<Done> {
        let (reply, rx) = oneshot::channel();
        if self
            .jobs
            .send(Job {
                spec,
                store,
                progress,
                attempt,
                reply,
            })
            .is_err()
        {
            // The thread is gone (it only exits when the sender is dropped);
            // the dropped reply makes the receiver resolve to an error.
            tracing::error!("executor thread is gone");
        }
        rx
    }
}
