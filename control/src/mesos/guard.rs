//! The mass-delete guard of `mesos-sync`: deletes that would shrink the catalog far below the
//! largest it has been recently are held until the master has reported them for a while.
//!
//! A freshly elected Mesos master lists only the agents that have re-registered with it, for
//! up to its `--agent_reregister_timeout` (10 minutes by default, and at least that); a site cut
//! off across the WAN disappears agent by agent. Measured poll by poll, such a catalog can
//! shrink in steps that each stay below the limit, so the guard measures against a high-water
//! mark: the largest catalog of the last one or two windows. The mark lives in etcd beside the
//! election key, so a restarted or newly elected `mesos-sync` (and `--once`) remembers it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the guard's memory is kept (outside `/lodestar/v1/`, which agents read).
pub const GUARD_KEY: &str = "/lodestar/sync/delete-guard";

/// Below this high-water mark, no delete counts as a mass delete.
pub const MIN_KEYS: usize = 10;

/// Mesos's `--agent_reregister_timeout` default (and minimum).
pub const AGENT_REREGISTER_TIMEOUT: Duration = Duration::from_secs(600);

/// The guard against acting on a master that suddenly reports far less than before.
#[derive(Clone, Debug)]
pub struct DeleteGuard {
    /// Deletes that would leave fewer owned keys than `1 - max_delete_fraction` of the
    /// high-water mark are held...
    pub max_delete_fraction: f64,
    /// ...until the master has kept reporting them for this long. This is also the window of
    /// the high-water mark.
    pub mass_delete_delay: Duration,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard {
            max_delete_fraction: 0.5,
            // The re-registration timeout, plus room for agents that re-register late in it
            // and for the polls that see them.
            mass_delete_delay: AGENT_REREGISTER_TIMEOUT + Duration::from_secs(300),
        }
    }
}

/// What the guard remembers across polls. Times are Unix milliseconds (wall clock: instances
/// on different hosts share it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardState {
    /// When the current window began (0: never).
    pub window_start_ms: u64,
    /// The most owned keys seen in the current window.
    pub window_max: usize,
    /// The most owned keys seen in the previous window.
    pub previous_max: usize,
    /// Since when the master has been reporting a mass delete (None: none is held).
    pub held_since_ms: Option<u64>,
}

/// What to do with one poll's deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a mass delete: apply everything.
    Apply,
    /// A mass delete: write the poll's puts, hold its deletes for `wait` more.
    Hold { high_water: usize, wait: Duration },
    /// A mass delete the master has reported for the whole delay: apply it, and take the
    /// smaller catalog as the new high-water mark.
    Release { high_water: usize },
}

impl GuardState {
    /// The largest catalog of the current and the previous window.
    pub fn high_water(&self) -> usize {
        self.window_max.max(self.previous_max)
    }

    /// Judges a poll that finds `before` owned keys in etcd and would leave `after`.
    pub fn judge(
        &mut self,
        guard: &DeleteGuard,
        now_ms: u64,
        before: usize,
        after: usize,
    ) -> Verdict {
        self.roll(now_ms, guard.mass_delete_delay);
        self.window_max = self.window_max.max(before);
        let high_water = self.high_water();
        let floor = high_water as f64 * (1.0 - guard.max_delete_fraction);
        let mass = high_water >= MIN_KEYS && after < before && (after as f64) < floor;
        if !mass {
            self.held_since_ms = None;
            self.window_max = self.window_max.max(after);
            return Verdict::Apply;
        }
        let since = *self.held_since_ms.get_or_insert(now_ms);
        let held_for = Duration::from_millis(now_ms.saturating_sub(since));
        if held_for >= guard.mass_delete_delay {
            self.held_since_ms = None;
            self.window_start_ms = now_ms;
            self.window_max = after;
            self.previous_max = after;
            return Verdict::Release { high_water };
        }
        Verdict::Hold {
            high_water,
            wait: guard.mass_delete_delay - held_for,
        }
    }

    /// Starts a new window once the current one is `window` old. After a gap of two windows
    /// (no poll for that long) the previous maximum is too old to count.
    fn roll(&mut self, now_ms: u64, window: Duration) {
        let window_ms = window.as_millis().max(1) as u64;
        // A clock set back restarts the window rather than stretching it.
        if self.window_start_ms == 0 || now_ms < self.window_start_ms {
            self.window_start_ms = now_ms;
            return;
        }
        let elapsed = now_ms - self.window_start_ms;
        if elapsed >= window_ms {
            self.previous_max = if elapsed < 2 * window_ms {
                self.window_max
            } else {
                0
            };
            self.window_max = 0;
            self.window_start_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn guard() -> DeleteGuard {
        DeleteGuard {
            max_delete_fraction: 0.5,
            mass_delete_delay: Duration::from_secs(600),
        }
    }

    /// Held against the mark `high_water`, for `secs` more.
    fn hold(high_water: usize, secs: u64) -> Verdict {
        Verdict::Hold {
            high_water,
            wait: Duration::from_secs(secs),
        }
    }

    /// The guard after its first poll, which found `tasks` tasks.
    fn seen(tasks: usize) -> (GuardState, DeleteGuard) {
        let mut s = GuardState::default();
        let g = guard();
        s.judge(&g, MIN, tasks, tasks);
        (s, g)
    }

    fn is_held(v: Verdict) -> bool {
        matches!(v, Verdict::Hold { .. })
    }

    #[test]
    fn the_default_hold_outlasts_mesos_agent_reregistration() {
        assert!(DeleteGuard::default().mass_delete_delay >= AGENT_REREGISTER_TIMEOUT);
    }

    #[test]
    fn two_polls_deleting_49_percent_each_are_held_at_the_second() {
        let mut s = GuardState::default();
        let g = guard();
        assert_eq!(s.judge(&g, MIN, 100, 100), Verdict::Apply);
        assert_eq!(s.judge(&g, 2 * MIN, 100, 51), Verdict::Apply);
        // 26 of a recent 100: held, although it deletes only 49% of the 51 there are.
        assert_eq!(s.judge(&g, 3 * MIN, 51, 26), hold(100, 600));
        assert_eq!(s.judge(&g, 4 * MIN, 51, 26), hold(100, 540));
    }

    #[test]
    fn a_shrink_reported_for_the_whole_delay_is_released_and_becomes_the_mark() {
        let (mut s, g) = seen(100);
        assert!(is_held(s.judge(&g, 2 * MIN, 100, 20)));
        assert!(is_held(s.judge(&g, 11 * MIN, 100, 20)));
        assert_eq!(
            s.judge(&g, 12 * MIN, 100, 20),
            Verdict::Release { high_water: 100 }
        );
        assert_eq!(s.high_water(), 20);
        // The smaller catalog is the measure now: losing 5 of 20 passes.
        assert_eq!(s.judge(&g, 13 * MIN, 20, 15), Verdict::Apply);
    }

    #[test]
    fn a_master_that_recovers_during_the_hold_restarts_it() {
        let (mut s, g) = seen(100);
        assert!(is_held(s.judge(&g, 2 * MIN, 100, 10)));
        // The agents re-registered: nothing to delete.
        assert_eq!(s.judge(&g, 5 * MIN, 100, 100), Verdict::Apply);
        assert_eq!(s.held_since_ms, None);
        assert_eq!(s.judge(&g, 11 * MIN, 100, 10), hold(100, 600));
    }

    #[test]
    fn the_mark_follows_growth_and_forgets_a_peak_two_windows_old() {
        let mut s = GuardState::default();
        let g = guard();
        s.judge(&g, MIN, 0, 12);
        s.judge(&g, 2 * MIN, 12, 40);
        assert_eq!(s.high_water(), 40);
        // 40 -> 28 passes; 28 -> 18 is below half of the recent 40.
        assert_eq!(s.judge(&g, 3 * MIN, 40, 28), Verdict::Apply);
        assert!(is_held(s.judge(&g, 4 * MIN, 28, 18)));
        // A slow scale-down: the 40 ages out after one to two windows.
        let mut s = GuardState::default();
        s.judge(&g, MIN, 40, 40);
        s.judge(&g, 5 * MIN, 40, 28);
        s.judge(&g, 12 * MIN, 28, 28);
        assert_eq!(s.high_water(), 40, "the previous window still counts");
        s.judge(&g, 23 * MIN, 28, 28);
        assert_eq!(s.high_water(), 28);
        assert_eq!(s.judge(&g, 24 * MIN, 28, 18), Verdict::Apply);
    }

    #[test]
    fn small_catalogs_and_puts_are_never_held() {
        let mut s = GuardState::default();
        let g = guard();
        assert_eq!(s.judge(&g, MIN, 9, 0), Verdict::Apply);
        let mut s = GuardState::default();
        s.judge(&g, MIN, 100, 100);
        // Every task replaced by a new one (a redeploy): as many keys after as before.
        assert_eq!(s.judge(&g, 2 * MIN, 100, 100), Verdict::Apply);
    }

    #[test]
    fn a_clock_set_back_neither_panics_nor_releases() {
        let mut s = GuardState::default();
        let g = guard();
        s.judge(&g, 100 * MIN, 100, 100);
        assert!(is_held(s.judge(&g, 101 * MIN, 100, 10)));
        assert!(is_held(s.judge(&g, 50 * MIN, 100, 10)));
    }
}
