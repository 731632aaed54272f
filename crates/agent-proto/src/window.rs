//! Credit-based flow control for streams.

/// Bytes a sender may have in flight on one stream before it waits for credit.
pub const INITIAL_WINDOW: u64 = 1024 * 1024;

/// The sender's view of one stream's credit: it may send while credit lasts,
/// and the receiver grants more (with a `Credit` message) as it consumes data.
/// A chatty process is thus paused by its pipe, not buffered without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    available: u64,
}

impl Default for Window {
    fn default() -> Self {
        Self::new(INITIAL_WINDOW)
    }
}

impl Window {
    /// A window with `credit` bytes available.
    pub const fn new(credit: u64) -> Self {
        Self { available: credit }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// How many of `wanted` bytes may be sent now; takes them from the window.
    pub fn take(&mut self, wanted: usize) -> usize {
        let granted = (wanted as u64).min(self.available);
        self.available -= granted;
        granted as usize
    }

    /// Adds credit granted by the receiver (saturating).
    pub fn grant(&mut self, bytes: u64) {
        self.available = self.available.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_stops_when_credit_runs_out_and_resumes_on_grant() {
        let mut w = Window::new(100);
        assert_eq!(w.take(60), 60);
        assert_eq!(w.take(60), 40);
        assert_eq!(w.take(1), 0);
        w.grant(30);
        assert_eq!(w.available(), 30);
        assert_eq!(w.take(100), 30);
        w.grant(u64::MAX);
        w.grant(5);
        assert_eq!(w.available(), u64::MAX);
        assert_eq!(Window::default().available(), INITIAL_WINDOW);
    }
}
