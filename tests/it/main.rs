//! All integration tests, built into one binary (one module per area).

mod store_crash;
mod store_flood;
