//! One integration-test binary, one module per area.

mod app;
mod rooms;
mod rooms_vectors;
