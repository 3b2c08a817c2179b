//! The SCIM seam: the server holds one [`EngineConnector`] per vendor tenant and calls it as it
//! calls any connector; reads are answered from the directory, writes go through the engine.

use super::{Engine, EngineStats};
use crate::connector::{Connector, ListPage, Precondition, RequestContext};
use crate::scim::list::ListQuery;
use crate::scim::patch::{apply_patch, MemberOp, PatchMode, PatchOptions, PatchRequest};
use crate::scim::resource::{replace, strip_unreturnable};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::ScimResult;
use crate::store::directory::Directory;
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

pub struct EngineConnector(pub Arc<Engine>);

impl std::ops::Deref for EngineConnector {
    type Target = Arc<Engine>;
    fn deref(&self) -> &Arc<Engine> {
        &self.0
    }
}

#[async_trait]
impl Connector for EngineConnector {
    fn schemas(&self) -> &SchemaRegistry {
        self.0.dir.schemas()
    }

    async fn create(
        &self,
        kind: ResourceKind,
        resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.0.refuse_if_stopped()?;
        match kind {
            ResourceKind::User => self.0.create_user(resource, ctx).await,
            ResourceKind::Group => self.0.create_group(resource, ctx).await,
        }
    }

    async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.0.refuse_if_stopped()?;
        let doc = self.0.dir.load_or_404(kind, id)?;
        self.0.dir.render(kind, id, doc, with_members, ctx)
    }

    async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        mut resource: Value,
        pre: &Precondition,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.0.refuse_if_stopped()?;
        let e = &self.0;
        let schema = e.dir.schema(kind);
        strip_unreturnable(&mut resource, schema);
        match kind {
            ResourceKind::User => {
                let guard = e.user_docs.lock(id).await;
                let old = e.dir.load_or_404(kind, id)?;
                e.check_precondition(kind, id, &old, pre)?;
                let doc = replace(&old, resource, schema)?;
                let doc = e.update_user(id, guard, &old, doc, "replace").await?;
                e.dir.render(kind, id, doc, true, ctx)
            }
            ResourceKind::Group => {
                let members = resource.as_object_mut().and_then(|o| o.remove("members"));
                let guard = e.group_docs.lock(id).await;
                let old = e.dir.load_or_404(kind, id)?;
                e.check_precondition(kind, id, &old, pre)?;
                let doc = replace(&old, resource, schema)?;
                // PUT replaces the whole resource (RFC 7644 §3.5.1): no `members` means none.
                let list = members
                    .and_then(|m| m.as_array().cloned())
                    .unwrap_or_default();
                let doc = e
                    .change_group(
                        id,
                        guard,
                        &old,
                        Some(doc),
                        &[MemberOp::Replace(list)],
                        "replace",
                    )
                    .await?;
                e.dir.render(kind, id, doc, true, ctx)
            }
        }
    }

    async fn patch(
        &self,
        kind: ResourceKind,
        id: &str,
        request: &PatchRequest,
        pre: &Precondition,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.0.refuse_if_stopped()?;
        let e = &self.0;
        let dir = &e.dir;
        let schema = dir.schema(kind);
        match kind {
            ResourceKind::User => {
                let guard = e.user_docs.lock(id).await;
                let old = dir.load_or_404(kind, id)?;
                // Patched with its derived `groups` visible, which is also the version an
                // If-Match is compared with.
                let subject = dir.render(kind, id, old.clone(), false, ctx)?;
                Directory::check_precondition(&subject, pre)?;
                let outcome = apply_patch(
                    &subject,
                    request,
                    schema,
                    PatchOptions {
                        mode: PatchMode::IdpCompatible,
                        external_members: false,
                    },
                )?;
                if outcome.delta.changed.is_empty() {
                    return dir.render(kind, id, old, with_members, ctx);
                }
                let mut doc = outcome.resource;
                if let Some(o) = doc.as_object_mut() {
                    o.remove("groups");
                    o.remove("meta");
                }
                let doc = e.update_user(id, guard, &old, doc, "patch").await?;
                dir.render(kind, id, doc, with_members, ctx)
            }
            ResourceKind::Group => {
                let guard = e.group_docs.lock(id).await;
                let old = dir.load_or_404(kind, id)?;
                Directory::check_precondition(&old, pre)?;
                let outcome = apply_patch(
                    &old,
                    request,
                    schema,
                    PatchOptions {
                        mode: PatchMode::IdpCompatible,
                        external_members: true,
                    },
                )?;
                if outcome.delta.is_empty() {
                    return dir.render(kind, id, old, with_members, ctx);
                }
                let mut doc = outcome.resource;
                strip_unreturnable(&mut doc, schema);
                let new_doc = (!outcome.delta.changed.is_empty()).then_some(doc);
                let doc = e
                    .change_group(id, guard, &old, new_doc, &outcome.delta.member_ops, "patch")
                    .await?;
                dir.render(kind, id, doc, with_members, ctx)
            }
        }
    }

    async fn delete(&self, kind: ResourceKind, id: &str, pre: &Precondition) -> ScimResult<()> {
        self.0.refuse_if_stopped()?;
        match kind {
            ResourceKind::User => self.0.delete_user(id, pre).await,
            ResourceKind::Group => self.0.delete_group(id, pre).await,
        }
    }

    async fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage> {
        self.0.refuse_if_stopped()?;
        // Lookups must see every vendor user: before the first observe, wait for it.
        if !*self.0.synced.borrow() {
            self.0.wait_synced().await?;
        }
        self.0.dir.list(kind, query, with_members, ctx)
    }

    /// The store serves: ready. Vendor trouble is reported by [`Connector::vendor_status`], not
    /// here, so one vendor's outage never takes the bridge out of a load balancer.
    async fn ready(&self) -> Result<(), String> {
        self.0.dir.ready()
    }

    async fn vendor_status(&self) -> Result<(), String> {
        let e = &self.0;
        if let Some(f) = e.fatal.read().clone() {
            return Err(f);
        }
        if let Some(reason) = e.adapter.unavailable().or_else(|| e.stalled()) {
            return Err(reason);
        }
        if e.roles.read().is_none() {
            return Err(format!("{} roles not read yet", e.caps.vendor));
        }
        if !*e.synced.borrow() {
            return Err(format!(
                "first read of the {} directory not finished",
                e.caps.vendor
            ));
        }
        Ok(())
    }

    fn engine_stats(&self) -> Option<EngineStats> {
        Some(self.0.stats())
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        Some(self.0.clone())
    }
}
