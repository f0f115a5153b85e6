//! One integration-test binary: each module starts the emulator in-process on loopback.

mod batch;
mod common;
mod demo;
mod library;
mod output;
mod reliability;
mod teleport;
