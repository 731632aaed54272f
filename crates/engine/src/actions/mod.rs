//! Actions the host takes part in: the ones it serves itself ([`native`]:
//! upload/download-artifact and cache) and the remote ones it fetches with git
//! ([`remote`]).

pub mod native;
pub mod remote;
