//! One integration-test binary, one module per area.

mod rooms;
mod rooms_vectors;
