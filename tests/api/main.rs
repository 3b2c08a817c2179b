//! Integration tests of the bridge server: each spawns the real server on port 0 with a fresh
//! data dir and drives it over HTTP, with the request sequences Okta and Entra ID send
//! (shared/reference/idp-behavior.md). One binary, one module per feature.

// `assert_eq!(ids, [id.clone()])` reads better than `std::slice::from_ref(&id)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod helpers;

mod case;
mod concurrency;
mod discovery;
mod entra;
mod errors;
mod etag;
mod filters;
mod groups;
mod okta;
mod ops;
mod persistence;
mod review;
mod roundtrip;
mod tenants;
