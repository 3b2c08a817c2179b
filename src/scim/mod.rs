//! The SCIM 2.0 protocol, pure: no HTTP, no I/O, no vendor (RFC 7643, RFC 7644 and the dialects
//! Okta and Entra ID really send).

pub mod discovery;
pub mod error;
pub mod filter;
pub mod list;
pub mod patch;
pub mod path;
pub mod projection;
pub mod request;
pub mod resource;
pub mod schema;
pub mod value;

pub use error::{ScimError, ScimResult, ScimType};
