//! Adapters that carry events beyond the sans-IO core.

pub mod homeserver;
