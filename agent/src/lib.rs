//! felhom-agent library (placeholder while the workspace is laid out).
pub mod queue;
pub mod state;
