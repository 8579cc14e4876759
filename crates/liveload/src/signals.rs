//! Ctrl-C, SIGTERM and SIGHUP while a run goes on.
//!
//! The first one stops the run and starts teardown (closing the terminal or the SSH session
//! sends SIGHUP: it must tear down like Ctrl-C, not kill the controller with nodes running).
//! Teardown must still be escapable: the second prints what is still being destroyed, and the
//! third exits at once, leaving the nodes to their dead-man switch (they stop within the grace
//! period once the controller is silent) and their TTL, with the `liveload cleanup` command to
//! run.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::progress::Progress;

/// Counts termination signals from the moment it is created.
pub struct Signals {
    count: watch::Receiver<u32>,
}

impl Signals {
    /// Listen for SIGINT, SIGTERM and SIGHUP; `progress` says what teardown still holds when a
    /// second signal comes, and `cleanup` is the command printed when a third one gives up.
    pub fn listen(progress: Arc<Progress>, cleanup: String) -> Signals {
        let (tx, count) = watch::channel(0u32);
        tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                let n = *tx.borrow() + 1;
                tx.send_replace(n);
                match n {
                    1 => eprintln!(
                        "\nstopping: tearing down every node (again to see what is left, a third time to exit)"
                    ),
                    2 => {
                        let held = progress.held();
                        eprintln!(
                            "\nstill destroying {} node(s): {}",
                            held.nodes.len(),
                            held.nodes.join(", ")
                        );
                    }
                    _ => {
                        let held = progress.held();
                        eprintln!(
                            "\nexiting without waiting: {} node(s) are left to their dead-man switch and TTL; to destroy them now run:\n  {}",
                            held.nodes.len(),
                            held.run_id
                                .map(|run| format!("{cleanup} --run {run}"))
                                .unwrap_or_else(|| format!("{cleanup} --all"))
                        );
                        std::process::exit(liveload_core::error::exit_code::INTERRUPTED);
                    }
                }
            }
        });
        Signals { count }
    }

    /// Completes at the first signal.
    pub async fn first(&self) {
        let mut count = self.count.clone();
        let _ = count.wait_for(|n| *n >= 1).await;
    }
}
