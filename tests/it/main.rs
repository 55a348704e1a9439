//! One integration-test binary, one module per area.

mod homeserver;
mod rooms;
mod rooms_vectors;
