//! What the operators of the bridge answer to auditors for (issue 13): the tamper-evident audit
//! log's export and verification, the access review, and the dormant-account sweep. Each is a
//! plain function over the store and the engines, so that the admin API (a running bridge) and
//! the CLI (`--data-dir`, no bridge running) give the same answer.

pub mod access;
pub mod audit;
pub mod dormant;
