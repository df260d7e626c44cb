//! SIGTERM/SIGINT: the first one asks the agent to stop after (or instead of)
//! its current task.

use tokio::sync::watch;

/// A shutdown request that any task can wait for or poll.
#[derive(Clone)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Listen for SIGTERM and SIGINT on the current runtime.
    pub fn listen() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown requested");
            let _ = tx.send(true);
            // Keep the sender alive so waiters never see a closed channel.
            std::future::pending::<()>().await;
        });
        Ok(Shutdown { rx })
    }

    /// Whether shutdown was requested.
    pub fn requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolve once shutdown is requested.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}
