//! The session manager's counters, shared by the manager, its sessions and its warm pool,
//! and mirrored to the `metrics` facade as histograms.

use std::sync::Mutex;
use std::time::Duration;

use crate::lifecycle::SessionState;

/// Count, total, shortest and longest of a set of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationStats {
    /// How many were recorded.
    pub count: u64,
    /// Their sum.
    pub total: Duration,
    /// The shortest.
    pub min: Duration,
    /// The longest.
    pub max: Duration,
}

impl DurationStats {
    fn record(&mut self, duration: Duration) {
        self.min = if self.count == 0 {
            duration
        } else {
            self.min.min(duration)
        };
        self.max = self.max.max(duration);
        self.count += 1;
        self.total += duration;
    }

    /// The mean, when anything was recorded.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| self.total / self.count as u32)
    }
}

/// A copy of the manager's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Sessions now in [`SessionState::Created`].
    pub created: usize,
    /// Sessions now in [`SessionState::Executing`].
    pub executing: usize,
    /// Sessions now in [`SessionState::Completed`].
    pub completed: usize,
    /// Sessions now in [`SessionState::Failed`].
    pub failed: usize,
    /// Sessions released since the manager started.
    pub released: u64,
    /// Sessions that ended in [`SessionState::Completed`] since the start.
    pub total_completed: u64,
    /// Sessions that ended in [`SessionState::Failed`] since the start.
    pub total_failed: u64,
    /// Cold boots, from launch to agent handshake.
    pub boots: DurationStats,
    /// Snapshot restores, from launch to agent handshake and clock set.
    pub restores: DurationStats,
    /// VM starts (boot or restore) that failed.
    pub start_failures: u64,
    /// VMs waiting in the pool.
    pub pool_ready: usize,
    /// VMs running or starting now (sessions' and the pool's), out of `max_vms`.
    pub vms_running: usize,
}

/// The manager's counters, shared with its pool and sessions.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    counters: Mutex<MetricsSnapshot>,
}

impl Metrics {
    /// A copy of the counters now.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        *self.counters.lock().expect("metrics")
    }

    fn update(&self, change: impl FnOnce(&mut MetricsSnapshot)) {
        change(&mut self.counters.lock().expect("metrics"));
    }

    pub(crate) fn record_boot(&self, took: Duration) {
        ::metrics::histogram!("firerunner_vm_boot_seconds").record(took.as_secs_f64());
        self.update(|m| m.boots.record(took));
    }

    pub(crate) fn record_restore(&self, took: Duration) {
        ::metrics::histogram!("firerunner_vm_restore_seconds").record(took.as_secs_f64());
        self.update(|m| m.restores.record(took));
    }

    pub(crate) fn record_start_failure(&self) {
        self.update(|m| m.start_failures += 1);
    }

    pub(crate) fn set_pool_ready(&self, ready: usize) {
        self.update(|m| m.pool_ready = ready);
    }

    pub(crate) fn moved(&self, from: Option<SessionState>, to: SessionState) {
        self.update(|m| {
            if let Some(from) = from {
                if let Some(gauge) = m.gauge(from) {
                    *gauge -= 1;
                }
            }
            match to {
                SessionState::Released => m.released += 1,
                SessionState::Completed => m.total_completed += 1,
                SessionState::Failed => m.total_failed += 1,
                _ => {}
            }
            if let Some(gauge) = m.gauge(to) {
                *gauge += 1;
            }
        });
    }
}

impl MetricsSnapshot {
    fn gauge(&mut self, state: SessionState) -> Option<&mut usize> {
        match state {
            SessionState::Created => Some(&mut self.created),
            SessionState::Executing => Some(&mut self.executing),
            SessionState::Completed => Some(&mut self.completed),
            SessionState::Failed => Some(&mut self.failed),
            SessionState::Released => None,
        }
    }
}
