//! eddy-runtime: the host that runs users' Wasm processors.
//!
//! This crate is a placeholder until the processor-runtime issue lands: it fixes
//! the crate's place in the dependency graph (protocol <- sdk <- runtime <- broker)
//! so that the broker can embed workers later without reshaping the workspace.
//! It exposes nothing yet.
