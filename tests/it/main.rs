//! One integration-test binary, one module per area.

mod lan;
mod rooms;
mod rooms_vectors;
