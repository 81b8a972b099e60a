//! The fuzz targets' shared bodies (see `harness.rs`).
pub mod harness;
