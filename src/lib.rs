//! HAPair: a two-member high-availability pair for Kubernetes.
//!
//! The protocol (patent JP2001175626, digest in SPEC.md) lives in [`protocol`] and performs no I/O;
//! every other module is a thin shell that observes the world, asks [`protocol`] what to do, and
//! carries the answer out.

pub mod agent;
pub mod controller;
pub mod crd;
pub mod health;
pub mod kv;
pub mod mailbox;
pub mod metrics;
pub mod operator;
pub mod protocol;
pub mod store;
pub mod telemetry;
