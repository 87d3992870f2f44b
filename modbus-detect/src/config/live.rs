//! Settings that change while a sensor runs (`--config-from nats`).
//!
//! The shards never wait for them: whoever has new settings installs them
//! here, and each shard takes them between two batches of frames (an
//! atomic load per batch when nothing changed). A shard never sees half a
//! change: it takes one whole [`DetectConfig`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::central::CentralReport;
use super::DetectConfig;

/// The newest settings, how many times they were replaced, and where
/// they came from (the report's `central_config`).
#[derive(Debug)]
pub struct LiveConfig {
    version: AtomicU64,
    current: Mutex<Arc<DetectConfig>>,
    central: Mutex<CentralReport>,
}

impl LiveConfig {
    pub fn new(cfg: Arc<DetectConfig>) -> Self {
        LiveConfig {
            version: AtomicU64::new(0),
            current: Mutex::new(cfg),
            central: Mutex::new(CentralReport::default()),
        }
    }

    /// Where the settings came from, and every change, as they are now.
    pub fn central(&self) -> CentralReport {
        self.central
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Update that story.
    pub fn note<T>(&self, f: impl FnOnce(&mut CentralReport) -> T) -> T {
        f(&mut self.central.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replace the settings; shards take them at their next batch.
    pub fn install(&self, cfg: Arc<DetectConfig>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *current = cfg;
        // Under the lock, so that a reader of the new version finds the
        // settings it numbers (or newer ones).
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The settings in force now.
    pub fn current(&self) -> Arc<DetectConfig> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Settings newer than version `seen`, with their version.
    #[inline]
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Arc<DetectConfig>)> {
        if self.version.load(Ordering::Acquire) == seen {
            return None;
        }
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        Some((self.version.load(Ordering::Acquire), current.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_each_change_once_and_whole() {
        let live = LiveConfig::new(Arc::new(DetectConfig::default()));
        assert!(live.newer_than(0).is_none());
        live.install(Arc::new(DetectConfig {
            ports: vec![5020],
            ..DetectConfig::default()
        }));
        let (v, cfg) = live.newer_than(0).expect("a change");
        assert_eq!(cfg.ports, [5020]);
        assert!(live.newer_than(v).is_none());
        assert_eq!(live.current().ports, [5020]);
    }
}
