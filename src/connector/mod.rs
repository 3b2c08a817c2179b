//! The connector seam: the SCIM side hands a connector typed operations on canonical resources;
//! the connector answers in SCIM resources. Everything vendor-specific stays behind this trait.

pub mod http;
pub mod local;
pub mod metabase;
pub mod roles;
pub mod sisense;
pub mod tableau;
pub mod text;
pub mod thoughtspot;

use crate::scim::list::ListQuery;
use crate::scim::patch::PatchRequest;
pub use crate::scim::request::{ListPage, Precondition, RequestContext};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::ScimResult;
use async_trait::async_trait;
use serde_json::Value;

/// What the server asks of a connector. Resources in and out are canonical JSON objects
/// (see `scim::resource`); outgoing ones carry `id` and `meta`. `with_members` tells whether
/// a group's `members` will be rendered, so a connector can skip loading large member lists.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The attributes this connector can round-trip, published in `/Schemas`.
    fn schemas(&self) -> &SchemaRegistry;

    async fn create(
        &self,
        kind: ResourceKind,
        resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        resource: Value,
        pre: &Precondition,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn patch(
        &self,
        kind: ResourceKind,
        id: &str,
        request: &PatchRequest,
        pre: &Precondition,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn delete(&self, kind: ResourceKind, id: &str, pre: &Precondition) -> ScimResult<()>;

    /// Filtered, sorted list. The connector may push simple predicates down to an index; the
    /// page returned covers `query.page_range(total)`.
    async fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage>;

    /// Readiness: `Err(reason)` when the backing store cannot serve.
    async fn ready(&self) -> Result<(), String>;

    /// The vendor behind the connector: `Err(reason)` while it cannot take changes (they are
    /// queued meanwhile). For the detailed readiness, never for `/readyz` itself.
    async fn vendor_status(&self) -> Result<(), String> {
        Ok(())
    }

    /// The provisioning engine's outbox and delivery figures, for `/metrics`.
    fn engine_stats(&self) -> Option<crate::engine::EngineStats> {
        None
    }

    /// The provisioning engine behind a vendor tenant (the admin API's plans, reports and
    /// actions); `None` for the local connector.
    fn engine(&self) -> Option<std::sync::Arc<crate::engine::Engine>> {
        None
    }
}

/// Opens the provisioning engine of a vendor tenant over `adapter`, whose calls go through
/// `client` (its send rate is reported in `/metrics`). `purpose` names the store tree.
pub fn open_engine(
    store: &crate::store::Store,
    tenant: &crate::config::TenantConfig,
    tenant_index: usize,
    purpose: &'static str,
    adapter: std::sync::Arc<dyn crate::engine::adapter::VendorAdapter>,
    client: http::VendorClient,
    role_changes: Option<prometheus::IntCounter>,
) -> Result<std::sync::Arc<crate::engine::Engine>, String> {
    let settings = crate::engine::EngineSettings::from_env(
        tenant.id.as_str(),
        tenant_index,
        tenant.roles.clone(),
        tenant.on_vendor_unavailable,
        purpose,
    )
    .with_attributes(&tenant.attributes);
    let settings = crate::engine::EngineSettings {
        dry_run: tenant.dry_run,
        ..settings
    };
    crate::engine::Engine::open(
        store,
        settings,
        adapter,
        role_changes,
        Some(Box::new(move || client.send_rate())),
    )
    .map_err(|e| e.to_string())
}

/// What a start-up check that verifies as `--online` does comes to: `Ok(problems)` from a
/// check that ran (of which an unreachable vendor, at `…base_url`, or a read that failed,
/// "cannot …", are not the config's fault: the engine resolves roles when the vendor answers),
/// `Err(problems)` from a refused sign-in.
pub fn settle_preflight(
    outcome: Result<Vec<crate::config::Problem>, Vec<crate::config::Problem>>,
) -> Result<Option<crate::engine::role_table::RoleTable>, Vec<crate::config::Problem>> {
    let fatal: Vec<crate::config::Problem> = outcome?
        .into_iter()
        .filter(|p| !p.key_path.ends_with(".base_url") && !p.message.starts_with("cannot "))
        .collect();
    if fatal.is_empty() {
        Ok(None)
    } else {
        Err(fatal)
    }
}
