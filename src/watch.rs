//! File watching for hot reload (serving certificate now, policies later): a notify
//! watcher on the parent directories, coalesced into "something changed" ticks, with a
//! periodic tick as a fallback for filesystems that do not report events (and for the
//! symlink swaps of Kubernetes Secret volumes).

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Keeps the OS watcher alive; dropping it stops the events.
pub struct Watch {
    _watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::Receiver<()>,
    poll: tokio::time::Interval,
    debounce: Duration,
}

impl Watch {
    /// Watches the directories holding `paths`. If the OS watcher cannot be set up the
    /// watch still works by polling.
    pub fn new(paths: &[PathBuf], poll_every: Duration, debounce: Duration) -> Self {
        let dirs: Vec<PathBuf> = paths
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        Self::dirs(&dirs, RecursiveMode::NonRecursive, poll_every, debounce)
    }

    /// Watches a whole directory tree.
    pub fn tree(dir: &std::path::Path, poll_every: Duration, debounce: Duration) -> Self {
        Self::dirs(
            &[dir.to_path_buf()],
            RecursiveMode::Recursive,
            poll_every,
            debounce,
        )
    }

    fn dirs(
        dirs: &[PathBuf],
        mode: RecursiveMode,
        poll_every: Duration,
        debounce: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                // A full channel already holds a pending tick: nothing is lost.
                let _ = tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                let mut dirs = dirs.to_vec();
                dirs.sort();
                dirs.dedup();
                for d in &dirs {
                    if let Err(e) = w.watch(d, mode) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; polling instead");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher available; polling instead");
                None
            }
        };
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            _watcher: watcher,
            rx,
            poll,
            debounce,
        }
    }

    /// Waits for the next change (or poll tick), then lets a burst of events settle.
    pub async fn changed(&mut self) {
        tokio::select! {
            _ = self.rx.recv() => {}
            _ = self.poll.tick() => {}
        }
        tokio::time::sleep(self.debounce).await;
        // Drain the events of the burst we just waited out.
        while self.rx.try_recv().is_ok() {}
    }
}
