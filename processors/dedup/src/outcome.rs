//! How the write of a batch the processor passed on went, shared by the window entries of its
//! profiles: pending, stored, or failed (with why). One small cell per batch, however many
//! entries point at it; a waiter is woken when it settles.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

const PENDING: u8 = 0;
const STORED: u8 = 1;
const FAILED: u8 = 2;

#[derive(Debug, Default)]
struct Cell {
    state: AtomicU8,
    error: OnceLock<String>,
    settled: Notify,
}

/// A handle on one batch's write outcome; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Outcome(Arc<Cell>);

impl Outcome {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records how the write went and wakes every waiter (the first call wins).
    pub fn settle(&self, result: Result<(), String>) {
        let state = match result {
            Ok(()) => STORED,
            Err(e) => {
                let _ = self.0.error.set(e);
                FAILED
            }
        };
        if self
            .0
            .state
            .compare_exchange(PENDING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.0.settled.notify_waiters();
        }
    }

    /// The outcome if settled.
    pub fn get(&self) -> Option<Result<(), String>> {
        match self.0.state.load(Ordering::Acquire) {
            PENDING => None,
            STORED => Some(Ok(())),
            _ => Some(Err(self.0.error.get().cloned().unwrap_or_default())),
        }
    }

    pub fn is_failed(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == FAILED
    }

    /// Waits until the outcome is settled.
    pub async fn wait(&self) -> Result<(), String> {
        loop {
            // Registered before the check, so a settle in between still wakes this waiter.
            let notified = self.0.settled.notified();
            if let Some(result) = self.get() {
                return result;
            }
            notified.await;
        }
    }

    pub fn same(&self, other: &Outcome) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_the_first_settlement() {
        let o = Outcome::new();
        assert_eq!(o.get(), None);
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.wait().await }
        });
        tokio::task::yield_now().await;
        o.settle(Err("disk full".into()));
        o.settle(Ok(()));
        assert_eq!(waiter.await.unwrap(), Err("disk full".to_string()));
        assert!(o.is_failed());
        assert_eq!(o.wait().await, Err("disk full".to_string()));
    }
}
