//! The policy set in force, swapped atomically on reload. A set that fails to load never
//! replaces the working one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{PolicyError, PolicySet};

pub struct PolicyStore {
    current: RwLock<Arc<PolicySet>>,
    dir: Option<PathBuf>,
    deadline: Duration,
    fingerprint: RwLock<Option<u64>>,
}

impl PolicyStore {
    /// Loads `dir` now; an error here stops the start (there is no previous set).
    pub fn load(dir: &Path, deadline: Duration) -> Result<Self, PolicyError> {
        let set = PolicySet::load_dir(dir, deadline)?;
        Ok(Self {
            current: RwLock::new(Arc::new(set)),
            dir: Some(dir.to_path_buf()),
            deadline,
            fingerprint: RwLock::new(fingerprint(dir)),
        })
    }

    /// A fixed set (tests, or no policy directory).
    pub fn fixed(set: PolicySet) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
            dir: None,
            deadline: super::DEFAULT_DEADLINE,
            fingerprint: RwLock::new(None),
        }
    }

    /// The set in force.
    pub fn get(&self) -> Arc<PolicySet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Re-reads the directory if its files changed. `Ok(Some(n))`: a new set of `n`
    /// policies is in force; `Ok(None)`: nothing changed; `Err`: the new files were
    /// refused and the previous set stays.
    pub fn reload(&self) -> Result<Option<usize>, PolicyError> {
        let Some(dir) = self.dir.as_deref() else {
            return Ok(None);
        };
        let seen = fingerprint(dir);
        if seen == *self.fingerprint.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(None);
        }
        // Record what was seen even on failure, so a broken file is reported once,
        // not on every poll; the next edit is tried again.
        *self.fingerprint.write().unwrap_or_else(|e| e.into_inner()) = seen;
        let set = PolicySet::load_dir(dir, self.deadline)?;
        let n = set.policies().len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(Some(n))
    }
}

/// A hash of every file's path, size and content under `dir`.
fn fingerprint(dir: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let files = super::list(dir).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in files.policies.iter().chain(&files.data).chain(&files.tests) {
        p.hash(&mut h);
        std::fs::read(p).ok()?.hash(&mut h);
    }
    Some(h.finish())
}
