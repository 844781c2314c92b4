//! felhom-agent library (placeholder while the workspace is laid out).
