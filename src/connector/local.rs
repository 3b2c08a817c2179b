//! The `local` connector: SCIM resources kept in the bridge's own sled store (see
//! `store::directory`). It is the embedded default (`scim-bridge serve` with no config) and the
//! reference implementation of the connector trait.

use super::{Connector, ListPage, Precondition, RequestContext};
use crate::scim::list::ListQuery;
use crate::scim::patch::{apply_patch, MemberOp, PatchMode, PatchOptions, PatchRequest};
use crate::scim::resource::{replace, strip_unreturnable};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::ScimResult;
use crate::store::directory::{index_keys, Directory};
use crate::store::{Batch, Store, StoreError};
use async_trait::async_trait;
use serde_json::Value;

pub struct LocalConnector {
    dir: Directory,
    /// Serialises writes of this tenant: uniqueness checks and membership changes read, then
    /// write; reads take no lock. Each write is one atomic sled batch, flushed before the answer.
    write_lock: tokio::sync::Mutex<()>,
}

impl LocalConnector {
    pub fn open(store: &Store, tenant: &str) -> Result<LocalConnector, StoreError> {
        Ok(LocalConnector {
            dir: Directory::open(store, tenant, "local", SchemaRegistry::default())?,
            write_lock: tokio::sync::Mutex::new(()),
        })
    }
}

#[async_trait]
impl Connector for LocalConnector {
    fn schemas(&self) -> &SchemaRegistry {
        self.dir.schemas()
    }

    async fn create(
        &self,
        kind: ResourceKind,
        mut resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        strip_unreturnable(&mut resource, dir.schema(kind));
        let members = resource
            .get("members")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (id, mut doc) = dir.new_doc(kind, &resource);
        let guard = self.write_lock.lock().await;
        let (unique, _) = index_keys(kind, &id, &doc);
        dir.check_unique(kind, &unique, None)?;
        dir.stamp(kind, &mut doc, None);
        let mut batch = Batch::default();
        dir.write_doc(&mut batch, kind, &id, &doc, None);
        if kind == ResourceKind::Group && !members.is_empty() {
            dir.apply_member_ops(&mut batch, &id, &[MemberOp::Add(members)])?;
        }
        // Last before the commit: nothing fallible may stand between a count change and it.
        dir.bump_count(&mut batch, kind, 1);
        dir.commit(batch)?;
        drop(guard);
        dir.flush().await?;
        dir.render(kind, &id, doc, true, ctx)
    }

    async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let doc = self.dir.load_or_404(kind, id)?;
        self.dir.render(kind, id, doc, with_members, ctx)
    }

    async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        mut resource: Value,
        pre: &Precondition,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        let schema = dir.schema(kind);
        strip_unreturnable(&mut resource, schema);
        let members = resource.as_object_mut().and_then(|o| o.remove("members"));
        let guard = self.write_lock.lock().await;
        let old = dir.load_or_404(kind, id)?;
        Directory::check_precondition(&dir.render(kind, id, old.clone(), false, ctx)?, pre)?;
        let mut doc = replace(&old, resource, schema)?;
        doc["id"] = Value::String(id.to_string());
        let (unique, _) = index_keys(kind, id, &doc);
        dir.check_unique(kind, &unique, Some(id))?;
        dir.stamp(kind, &mut doc, Some(&old));
        let mut batch = Batch::default();
        dir.write_doc(&mut batch, kind, id, &doc, Some(&old));
        if kind == ResourceKind::Group {
            // PUT replaces the whole resource (RFC 7644 §3.5.1): no `members` means none.
            let list = members
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default();
            dir.apply_member_ops(&mut batch, id, &[MemberOp::Replace(list)])?;
        }
        dir.commit(batch)?;
        drop(guard);
        dir.flush().await?;
        dir.render(kind, id, doc, true, ctx)
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
        let dir = &self.dir;
        let schema = dir.schema(kind);
        let guard = self.write_lock.lock().await;
        let old = dir.load_or_404(kind, id)?;
        // Users are patched with their derived `groups` visible (readOnly: the engine refuses
        // writes to it), which also gives the version an If-Match is compared with; groups
        // without members, which the engine turns into member operations.
        let subject = match kind {
            ResourceKind::User => dir.render(kind, id, old.clone(), false, ctx)?,
            ResourceKind::Group => old.clone(),
        };
        Directory::check_precondition(&subject, pre)?;
        let outcome = apply_patch(
            &subject,
            request,
            schema,
            PatchOptions {
                mode: PatchMode::IdpCompatible,
                external_members: kind == ResourceKind::Group,
            },
        )?;
        let mut batch = Batch::default();
        let members_changed = kind == ResourceKind::Group
            && !outcome.delta.member_ops.is_empty()
            && !dir
                .apply_member_ops(&mut batch, id, &outcome.delta.member_ops)?
                .is_empty();
        if outcome.delta.changed.is_empty() && !members_changed {
            drop(guard);
            return dir.render(kind, id, old, with_members, ctx);
        }
        let mut doc = outcome.resource;
        strip_unreturnable(&mut doc, schema);
        doc["id"] = Value::String(id.to_string());
        let (unique, _) = index_keys(kind, id, &doc);
        dir.check_unique(kind, &unique, Some(id))?;
        dir.stamp(kind, &mut doc, Some(&old));
        dir.write_doc(&mut batch, kind, id, &doc, Some(&old));
        dir.commit(batch)?;
        drop(guard);
        dir.flush().await?;
        dir.render(kind, id, doc, with_members, ctx)
    }

    async fn delete(&self, kind: ResourceKind, id: &str, pre: &Precondition) -> ScimResult<()> {
        let dir = &self.dir;
        let guard = self.write_lock.lock().await;
        let old = dir.load_or_404(kind, id)?;
        // The version an If-Match is compared with includes derived data; no URL is rendered.
        let ctx = RequestContext {
            base_url: String::new(),
        };
        Directory::check_precondition(&dir.render(kind, id, old.clone(), false, &ctx)?, pre)?;
        let mut batch = Batch::default();
        dir.delete_entries(&mut batch, kind, id, &old)?;
        dir.commit(batch)?;
        drop(guard);
        dir.flush().await?;
        Ok(())
    }

    async fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage> {
        self.dir.list(kind, query, with_members, ctx)
    }

    async fn ready(&self) -> Result<(), String> {
        self.dir.ready()
    }
}
