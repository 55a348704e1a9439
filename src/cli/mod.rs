//! Command-line front ends that live in the library so the binary stays
//! thin: clap definitions plus a `run` function per area, writing to any
//! [`std::io::Write`]. The binary flattens them into its command enum.

pub mod homeserver;
pub mod mesh_demo;
pub mod rooms;
