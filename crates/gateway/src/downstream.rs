//! Host-facing listeners: Streamable HTTP (both eras on one endpoint) and stdio.

pub mod http;
pub mod listen;
pub mod stdio;
pub mod threads;
