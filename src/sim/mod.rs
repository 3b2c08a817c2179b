pub mod metabase;
pub mod sisense;
pub mod tableau;
pub mod thoughtspot;
