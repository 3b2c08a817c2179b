//! The dormant-account sweep's engine side: deactivation through the engine, actor `sweep`
//! (issue 13). Filled in by the sweep work.
