//! What the host keeps between jobs and runs: artifacts a job uploads for
//! others to download, and caches saved under a key and scope. Both live in
//! folders on the host with size and age limits; [`files`] holds their
//! shared file helpers.

pub mod artifacts;
pub mod cache;
mod files;
