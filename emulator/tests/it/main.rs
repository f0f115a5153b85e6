//! The emulator's tests, one binary: black-box over HTTP (each vendor's API, S3 REST and POST,
//! sign-in, storage backends) and the `upload-emulator` binary itself.

mod common;

mod apertur;
mod binary;
mod s3_rest;
mod signin;
mod storage;
mod teleport;
mod teleport_share;
mod uplift;
