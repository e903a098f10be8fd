//! Container output: the per-container log files (written by the shim, read
//! by the API).

pub mod logs;
