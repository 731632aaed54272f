//! Live events: what changed in the service, for the dashboard's SSE
//! stream. Publishing never blocks and never fails; a slow subscriber misses
//! events (and the dashboard refetches what it shows).

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{DeliveryRecord, ErrorRecord, JobRecord, RunRecord};

/// One change, as the dashboard receives it (JSON, tagged by `kind`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A delivery was received or settled.
    Delivery(DeliveryRecord),
    /// A run was queued, claimed or completed.
    Run(RunRecord),
    /// A job started or finished.
    Job(JobRecord),
    /// A log line of a running job.
    Log {
        /// The run.
        run_id: String,
        /// The job instance.
        job: String,
        /// `stdout`, `stderr` or `runner`.
        stream: &'static str,
        /// The line.
        text: String,
    },
    /// VM and session use changed.
    Capacity(Capacity),
    /// The service met an error.
    Error(ErrorRecord),
}

impl LiveEvent {
    /// The SSE event name: the dashboard listens per kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LiveEvent::Delivery(_) => "delivery",
            LiveEvent::Run(_) => "run",
            LiveEvent::Job(_) => "job",
            LiveEvent::Log { .. } => "log",
            LiveEvent::Capacity(_) => "capacity",
            LiveEvent::Error(_) => "error",
        }
    }
}

/// Use of this host's VMs and sessions against its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// VMs running or starting (pool included).
    pub vms_running: usize,
    /// Limit on VMs.
    pub max_vms: usize,
    /// Sessions (jobs) holding a VM.
    pub sessions: usize,
    /// Limit on sessions.
    pub max_sessions: usize,
    /// Warm VMs waiting in the pool.
    pub warm_ready: usize,
    /// Runs this host is executing.
    pub runs: usize,
    /// Limit on runs.
    pub max_runs: usize,
}

/// The fan-out point of live events.
#[derive(Debug, Clone)]
pub struct LiveHub {
    sender: broadcast::Sender<LiveEvent>,
    closed: CancellationToken,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
            closed: CancellationToken::new(),
        }
    }
}

impl LiveHub {
    /// Publishes an event to whoever listens now.
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.sender.send(event);
    }

    /// Ends every live stream (the service is stopping), so that open
    /// dashboards do not hold a graceful shutdown up.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Fires once [`LiveHub::close`] was called.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.sender.subscribe()
    }
}
