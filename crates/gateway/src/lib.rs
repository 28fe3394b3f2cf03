//! The gateway: configuration, routes and aggregation, legacy host sessions,
//! the pipeline of controls, and the host-facing listeners (HTTP and stdio).

pub mod admin;
pub mod config;
pub mod downstream;
pub mod error;
pub mod gateway;
pub mod operator;
pub mod parked;
pub mod pipeline;
pub mod registry;
pub mod route;
pub mod session;

pub use config::Config;
pub use error::GatewayError;
pub use gateway::{Gateway, Host};
