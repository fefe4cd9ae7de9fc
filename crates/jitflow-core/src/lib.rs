//! The pure lifecycle core of jitflow.
#![forbid(unsafe_code)]

pub mod id;
pub mod policy;
pub mod time;
