//! Subcommands other than an upload (`upload teleport list`, ...).

pub(crate) mod apertur;
pub(crate) mod auth;
#[cfg(feature = "emulate")]
pub(crate) mod demo;
pub(crate) mod man;
pub(crate) mod pending;
pub(crate) mod teleport;
