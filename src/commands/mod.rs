//! Subcommands other than an upload (`upload teleport list`, ...).

pub mod pending;
pub mod teleport;
