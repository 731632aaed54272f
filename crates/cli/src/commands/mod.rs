//! One module per subcommand.

pub mod actions;
pub mod hypervisor;
pub mod image;
pub mod learn;
pub mod plan;
pub mod run;
pub mod serve;
pub mod settings;
pub mod status;
pub mod validate;
pub mod vm;
