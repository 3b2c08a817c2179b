//! scim-bridge: a SCIM 2.0 server that provisions users, groups and roles into analytics vendors.

pub mod admin;
pub mod auth;
pub mod config;
pub mod connector;
pub mod demo;
pub mod engine;
pub mod governance;
pub mod scim;
pub mod server;
pub mod shard;
pub mod sim;
pub mod store;
