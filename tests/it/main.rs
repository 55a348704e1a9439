//! All integration tests, one module per area (one test binary).

mod reconcile;
mod wire;
