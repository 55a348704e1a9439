//! One integration-test binary, one module per area.

mod rooms;
mod rooms_vectors;
mod store_crash;
mod store_flood;
