//! The gateway: configuration, routes and aggregation, legacy host sessions,
//! the pipeline of controls, and the host-facing listeners (HTTP and stdio).

pub mod admin;
pub mod audit;
pub mod config;
pub mod downstream;
pub mod error;
pub mod exchange;
pub mod gateway;
pub mod identity;
pub mod metrics;
pub mod operator;
pub mod parked;
pub mod pipeline;
pub mod policy;
pub mod registry;
pub mod route;
pub mod secret;
pub mod session;
pub mod telemetry;
pub mod validation;

pub use config::Config;
pub use error::GatewayError;
pub use gateway::{Gateway, Host};
