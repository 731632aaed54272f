//! Actions the host takes part in: the ones it serves itself ([`native`]:
//! checkout, upload/download-artifact and cache), and the remote ones it
//! resolves before a job's first step ([`resolve`]), fetches with git
//! ([`remote`], [`git`]) and keeps in the action cache ([`store`]), which
//! [`pull`] fills ahead of time.

pub mod git;
pub mod native;
pub mod pull;
pub mod remote;
pub mod resolve;
pub mod store;
