//! The pure lifecycle core of jitflow.
#![forbid(unsafe_code)]

pub mod activation;
pub mod backoff;
pub mod connection;
pub mod filter;
pub mod id;
pub mod lifecycle;
pub mod policy;
pub mod time;
