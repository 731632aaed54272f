//! Shared set-up for tests that boot real guests (see `firerunner_vm::testing`).

pub use firerunner_vm::testing::{qemu_tcg as qemu, test_spec};
