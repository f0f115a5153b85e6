//! One integration-test binary: each module starts the emulator in-process on loopback.

mod apertur;
mod batch;
mod bulk_zip;
mod common;
mod conformance;
mod connect_timeout;
mod demo;
mod executor;
mod library;
mod output;
mod pending;
mod ratelimit;
mod readme;
mod real_s3;
mod reliability;
mod shell;
mod signin;
mod snapshots;
mod state;
mod teleport;
mod teleport_mgmt;
mod terminal;
mod tls;
mod truvideo;
mod uplift;
mod watch;
