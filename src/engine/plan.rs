//! What the engine would change at the vendor: the dry-run plan (issue 13). Filled in by the
//! dry-run work.
