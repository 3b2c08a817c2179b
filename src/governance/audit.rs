//! Filled in by the governance work (issue 13).
