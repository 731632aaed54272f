//! The states of deliveries, runs and jobs, stored as the words the
//! database has always held (`queued`, `dispatched`, ...), so existing
//! databases and the API's JSON keep their values.

/// A stored state word that names no state of its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column} holds an unknown state {value:?}")]
pub struct UnknownState {
    /// The column, e.g. `runs.state`.
    pub column: &'static str,
    /// What it held.
    pub value: String,
}

/// Defines a state enum with its stored words.
macro_rules! state_enum {
    ($(#[$meta:meta])* $name:ident in $column:literal {
        $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every state, in the order they are declared.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word stored for this state.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The state a stored word names.
            pub fn parse(value: &str) -> Result<Self, UnknownState> {
                match value {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownState {
                        column: $column,
                        value: value.to_string(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;

            fn from_str(value: &str) -> Result<Self, UnknownState> {
                Self::parse(value)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

state_enum! {
    /// Where a delivery is on its way to runs.
    DeliveryState in "deliveries.state" {
        /// Stored, waiting for a dispatcher.
        Received => "received",
        /// A dispatcher holds it (or held it and will retry).
        Dispatching => "dispatching",
        /// Its runs were queued.
        Dispatched => "dispatched",
        /// It runs nothing.
        Ignored => "ignored",
        /// It cannot be dispatched.
        Failed => "failed",
    }
}

state_enum! {
    /// Where a run is in the queue.
    RunState in "runs.state" {
        /// Waiting for a worker.
        Queued => "queued",
        /// A worker holds its lease.
        Running => "running",
        /// It has its conclusion.
        Completed => "completed",
    }
}

state_enum! {
    /// Where a job of a run is.
    JobState in "jobs.state" {
        /// Waiting for a reviewer to approve its environment.
        Waiting => "waiting",
        /// Started, not finished.
        Running => "running",
        /// It has its conclusion.
        Completed => "completed",
    }
}

state_enum! {
    /// Where a request to deploy to a protected environment is.
    ApprovalState in "approvals.state" {
        /// No reviewer has decided yet.
        Waiting => "waiting",
        /// A reviewer approved: the run's jobs may enter.
        Approved => "approved",
        /// A reviewer rejected: the run's jobs fail.
        Rejected => "rejected",
    }
}

impl DeliveryState {
    /// Whether a dispatcher still has to settle it.
    pub fn is_pending(self) -> bool {
        matches!(self, DeliveryState::Received | DeliveryState::Dispatching)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_word() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Ok(*state));
        }
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(*state));
        }
        for state in JobState::ALL {
            assert_eq!(JobState::parse(&state.to_string()), Ok(*state));
        }
    }

    #[test]
    fn an_unknown_word_names_its_column() {
        let err = RunState::parse("paused").unwrap_err();
        assert_eq!(
            err.to_string(),
            "runs.state holds an unknown state \"paused\""
        );
        assert_eq!(
            serde_json::to_string(&DeliveryState::Dispatched).unwrap(),
            "\"dispatched\""
        );
        assert!(RunState::Queued == "queued");
    }
}
