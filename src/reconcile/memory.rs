//! What the reconciler remembers between reconciles so that a cache lagging behind its
//! own writes never causes duplicates, plus the per-object failure counts for backoff.
//! Each is a small map with its own expiry; nothing here outlives a restart (a restarted
//! reconciler starts from fresh lists).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Creations not seen in the cache after this long are forgotten (they failed).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(30);
/// How long a sandbox bound moments ago is skipped while the cache catches up.
const TAKEN_TTL: Duration = Duration::from_secs(10);
/// Claims deleted before they were bound leave a first-seen time: forget old ones.
const FIRST_SEEN_TTL: Duration = Duration::from_secs(600);
/// How long a status this reconciler wrote is trusted over a cache that does not show
/// it yet.
const WRITTEN_TTL: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pool creations made but not yet seen in the cache, per template ("ns/name").
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<String, Vec<(String, Instant)>>>);

impl InFlight {
    /// Forgets creations the cache now shows (`seen` says which) or that expired, and
    /// returns how many are still unseen.
    pub fn pending(&self, template: &str, seen: impl Fn(&str) -> bool) -> usize {
        let mut map = lock(&self.0);
        let list = map.entry(template.to_string()).or_default();
        list.retain(|(n, at)| at.elapsed() < IN_FLIGHT_TTL && !seen(n));
        list.len()
    }

    pub fn created(&self, template: &str, sandbox: String) {
        lock(&self.0)
            .entry(template.to_string())
            .or_default()
            .push((sandbox, Instant::now()));
    }
}

/// Sandboxes ("ns/name") bound or created for a claim moments ago: skipped as warm
/// candidates, and awaited by their claim, while the cache catches up.
#[derive(Default)]
pub struct Taken(Mutex<HashMap<String, Instant>>);

impl Taken {
    pub fn take(&self, sandbox: String) {
        lock(&self.0).insert(sandbox, Instant::now());
    }

    pub fn contains(&self, sandbox: &str) -> bool {
        lock(&self.0)
            .get(sandbox)
            .is_some_and(|at| at.elapsed() < TAKEN_TTL)
    }

    /// The sandboxes taken recently (expired ones forgotten).
    pub fn recent(&self) -> std::collections::HashSet<String> {
        let mut map = lock(&self.0);
        map.retain(|_, at| at.elapsed() < TAKEN_TTL);
        map.keys().cloned().collect()
    }
}

/// When each claim (by uid) was first seen, for millisecond startup times: the watch
/// event is milliseconds behind the claim's creation, its creationTimestamp only has
/// second resolution.
#[derive(Default)]
pub struct FirstSeen(Mutex<HashMap<String, Instant>>);

impl FirstSeen {
    /// The first time `uid` was seen (now, if never).
    pub fn get(&self, uid: &str) -> Instant {
        let mut map = lock(&self.0);
        map.retain(|_, at| at.elapsed() < FIRST_SEEN_TTL);
        *map.entry(uid.to_string()).or_insert_with(Instant::now)
    }

    /// A bound or deleted claim needs its time no more.
    pub fn forget(&self, uid: &str) {
        lock(&self.0).remove(uid);
    }
}

/// Claims (by uid) this reconciler bound moments ago, with their sandbox: a reconcile
/// whose view of the claim predates that write waits for it instead of binding again.
#[derive(Default)]
pub struct Bound(Mutex<HashMap<String, (String, Instant)>>);

impl Bound {
    pub fn record(&self, claim_uid: &str, sandbox: String) {
        lock(&self.0).insert(claim_uid.to_string(), (sandbox, Instant::now()));
    }

    /// The sandbox `claim_uid` was bound to moments ago, if any.
    pub fn recent(&self, claim_uid: &str) -> Option<String> {
        let mut map = lock(&self.0);
        map.retain(|_, (_, at)| at.elapsed() < TAKEN_TTL);
        map.get(claim_uid).map(|(sb, _)| sb.clone())
    }
}

/// The last status this reconciler wrote per object ("kind/ns/name"): a reconcile on a
/// cache that does not show it yet would otherwise write it again.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, (String, Instant)>>);

impl Written {
    /// Whether `status` is what was last written for `key`, moments ago.
    pub fn same<T: serde::Serialize>(&self, key: &str, status: &T) -> bool {
        let Ok(text) = serde_json::to_string(status) else {
            return false;
        };
        let mut map = lock(&self.0);
        map.retain(|_, (_, at)| at.elapsed() < WRITTEN_TTL);
        map.get(key).is_some_and(|(last, _)| *last == text)
    }

    /// How long ago a status was last written for `key`.
    pub fn since(&self, key: &str) -> Option<Duration> {
        lock(&self.0).get(key).map(|(_, at)| at.elapsed())
    }

    pub fn record<T: serde::Serialize>(&self, key: String, status: &T) {
        if let Ok(text) = serde_json::to_string(status) {
            lock(&self.0).insert(key, (text, Instant::now()));
        }
    }
}

/// Consecutive failures per object, for exponential backoff.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `key`; returns the count.
    pub fn fail(&self, key: String) -> u32 {
        let mut map = lock(&self.0);
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeed(&self, key: &str) {
        lock(&self.0).remove(key);
    }
}

/// Everything above, per reconciler.
#[derive(Default)]
pub struct Memory {
    pub in_flight: InFlight,
    pub taken: Taken,
    pub bound: Bound,
    pub written: Written,
    pub first_seen: FirstSeen,
    pub failures: Failures,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_creations_count_until_seen() {
        let m = InFlight::default();
        m.created("ns/t", "t-a".into());
        m.created("ns/t", "t-b".into());
        assert_eq!(m.pending("ns/t", |_| false), 2);
        assert_eq!(m.pending("ns/t", |n| n == "t-a"), 1);
        assert_eq!(m.pending("ns/other", |_| false), 0);
    }

    #[test]
    fn a_written_status_is_recognised_until_it_changes() {
        let w = Written::default();
        assert!(!w.same("claim/ns/c", &"Bound"));
        w.record("claim/ns/c".into(), &"Bound");
        assert!(w.same("claim/ns/c", &"Bound"));
        assert!(!w.same("claim/ns/c", &"Failed"));
        assert!(!w.same("claim/ns/other", &"Bound"));
    }

    #[test]
    fn failures_count_and_reset() {
        let f = Failures::default();
        assert_eq!(f.fail("k".into()), 1);
        assert_eq!(f.fail("k".into()), 2);
        f.succeed("k");
        assert_eq!(f.fail("k".into()), 1);
    }
}
