//! The schema registry: RFC 7643 attribute definitions as data, the one source of truth that drives
//! `/Schemas` and `/ResourceTypes`, input canonicalization and validation, filter resolution
//! (`caseExact`, types) and `returned` rules. A connector may publish a subset of the attributes
//! (only what its vendor can round-trip): see [`ResourceSchema::restrict`].

use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex, OnceLock};

pub mod urn {
    pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    pub const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
    pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
    pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
    pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
    pub const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
    pub const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
    pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
    pub const SERVICE_PROVIDER_CONFIG: &str =
        "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
    pub const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
    pub const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute definition (RFC 7643 §7).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDef {
    pub name: String,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: String,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: Vec<String>,
    pub reference_types: Vec<String>,
    pub sub_attributes: Vec<AttributeDef>,
}

impl AttributeDef {
    /// A single-valued, optional, readWrite, case-insensitive string: the most common shape.
    pub fn string(name: &str, description: &str) -> Self {
        AttributeDef {
            name: name.to_string(),
            ty: AttrType::String,
            multi_valued: false,
            description: description.to_string(),
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: Vec::new(),
            reference_types: Vec::new(),
            sub_attributes: Vec::new(),
        }
    }
    pub fn of_type(name: &str, ty: AttrType, description: &str) -> Self {
        AttributeDef {
            ty,
            ..Self::string(name, description)
        }
    }
    pub fn complex(name: &str, description: &str, subs: Vec<AttributeDef>) -> Self {
        AttributeDef {
            sub_attributes: subs,
            ..Self::of_type(name, AttrType::Complex, description)
        }
    }
    pub fn reference(name: &str, description: &str, types: &[&str]) -> Self {
        AttributeDef {
            reference_types: types.iter().map(|s| s.to_string()).collect(),
            case_exact: true,
            ..Self::of_type(name, AttrType::Reference, description)
        }
    }
    pub fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    pub fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    pub fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    pub fn uniqueness(mut self, u: Uniqueness) -> Self {
        self.uniqueness = u;
        self
    }
    pub fn canonical(mut self, values: &[&str]) -> Self {
        self.canonical_values = values.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sub-attribute by name, case-insensitively (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&AttributeDef> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn is_read_only(&self) -> bool {
        self.mutability == Mutability::ReadOnly
    }

    /// The RFC 7643 §7 representation, as served by `/Schemas` (camelCase values, no nulls).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        m.insert("multiValued".into(), json!(self.multi_valued));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        if self.ty != AttrType::Complex && self.ty != AttrType::Boolean {
            m.insert("caseExact".into(), json!(self.case_exact));
        }
        if !self.canonical_values.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        m.insert("mutability".into(), json!(self.mutability.as_str()));
        m.insert("returned".into(), json!(self.returned.as_str()));
        if self.ty != AttrType::Complex && self.ty != AttrType::Boolean {
            m.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        }
        if self.ty == AttrType::Reference {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if !self.sub_attributes.is_empty() {
            m.insert(
                "subAttributes".into(),
                Value::Array(self.sub_attributes.iter().map(|a| a.to_json()).collect()),
            );
        }
        Value::Object(m)
    }
}

/// A schema (RFC 7643 §7): a URN and its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub id: String,
    pub name: String,
    pub description: String,
    pub attributes: Vec<AttributeDef>,
}

impl Schema {
    pub fn attr(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": [urn::SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "Schema",
                "location": format!("{}/Schemas/{}", base_url.trim_end_matches('/'), self.id),
            }
        })
    }
}

/// Ordered users before groups (the plan's order, `engine::plan_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "/Users",
            ResourceKind::Group => "/Groups",
        }
    }
    pub fn core_urn(self) -> &'static str {
        match self {
            ResourceKind::User => urn::CORE_USER,
            ResourceKind::Group => urn::CORE_GROUP,
        }
    }
}

/// Where an attribute lives in a resource: at the top level (core schema and common attributes)
/// or inside an extension object keyed by the extension URN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrLocation<'a> {
    Core,
    Extension(&'a str),
}

/// A resolved attribute: its location and definition.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedAttr<'a> {
    pub location: AttrLocation<'a>,
    pub def: &'a AttributeDef,
}

/// A resource type with its core schema, extensions and the common attributes (RFC 7643 §3.1).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSchema {
    pub kind: ResourceKind,
    pub description: String,
    pub core: Schema,
    /// (schema, required)
    pub extensions: Vec<(Schema, bool)>,
    /// `id`, `externalId`, `meta`: present on every resource, not listed under the core schema.
    pub common: Vec<AttributeDef>,
}

impl ResourceSchema {
    pub fn user() -> Self {
        ResourceSchema {
            kind: ResourceKind::User,
            description: "User Account".into(),
            core: core_user_schema(),
            extensions: vec![(enterprise_user_schema(), false)],
            common: common_attributes(),
        }
    }

    pub fn group() -> Self {
        ResourceSchema {
            kind: ResourceKind::Group,
            description: "Group".into(),
            core: core_group_schema(),
            extensions: Vec::new(),
            common: common_attributes(),
        }
    }

    pub fn extension(&self, urn: &str) -> Option<&Schema> {
        self.extensions
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Every schema URN a resource of this type may list in `schemas`.
    pub fn schema_urns(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.core.id.as_str())
            .chain(self.extensions.iter().map(|(s, _)| s.id.as_str()))
    }

    /// Resolves a top-level attribute: `urn` is the schema URN prefix when the path was
    /// URN-qualified (core or extension), `name` the attribute name. Case-insensitive.
    pub fn resolve(&self, urn: Option<&str>, name: &str) -> Option<ResolvedAttr<'_>> {
        match urn {
            None => self
                .common
                .iter()
                .chain(self.core.attributes.iter())
                .find(|a| a.name.eq_ignore_ascii_case(name))
                .map(|def| ResolvedAttr {
                    location: AttrLocation::Core,
                    def,
                }),
            Some(u) if u.eq_ignore_ascii_case(&self.core.id) => self.resolve(None, name),
            Some(u) => {
                let ext = self.extension(u)?;
                ext.attr(name).map(|def| ResolvedAttr {
                    location: AttrLocation::Extension(ext.id.as_str()),
                    def,
                })
            }
        }
    }

    /// A copy publishing only the listed attributes. Entries are `name`, `name.sub` (keeps only those
    /// sub-attributes of a complex attribute) or `urn:…:name`. Required core attributes, and the common
    /// attributes, always stay. Extensions left without attributes are dropped.
    pub fn restrict(&self, allowed: &[&str]) -> ResourceSchema {
        let wanted = |prefix: Option<&str>, name: &str| -> Option<Vec<String>> {
            let mut subs = Vec::new();
            let mut whole = false;
            for entry in allowed {
                let (urn, rest) = split_urn(entry);
                let same_schema = match (prefix, urn) {
                    (None, None) => true,
                    (Some(p), Some(u)) => p.eq_ignore_ascii_case(u),
                    _ => false,
                };
                if !same_schema {
                    continue;
                }
                let (head, sub) = match rest.split_once('.') {
                    Some((h, s)) => (h, Some(s)),
                    None => (rest, None),
                };
                if head.eq_ignore_ascii_case(name) {
                    match sub {
                        Some(s) => subs.push(s.to_ascii_lowercase()),
                        None => whole = true,
                    }
                }
            }
            if whole {
                Some(Vec::new())
            } else if subs.is_empty() {
                None
            } else {
                Some(subs)
            }
        };
        let filter_attrs = |schema: &Schema, prefix: Option<&str>| -> Vec<AttributeDef> {
            schema
                .attributes
                .iter()
                .filter_map(|a| {
                    if a.required && prefix.is_none() {
                        return Some(a.clone());
                    }
                    let subs = wanted(prefix, &a.name)?;
                    let mut a = a.clone();
                    if !subs.is_empty() {
                        a.sub_attributes
                            .retain(|s| subs.contains(&s.name.to_ascii_lowercase()));
                    }
                    Some(a)
                })
                .collect()
        };
        let mut out = self.clone();
        out.core.attributes = filter_attrs(&self.core, None);
        out.extensions = self
            .extensions
            .iter()
            .filter_map(|(s, req)| {
                let attrs = filter_attrs(s, Some(&s.id));
                if attrs.is_empty() {
                    None
                } else {
                    let mut s = s.clone();
                    s.attributes = attrs;
                    Some((s, *req))
                }
            })
            .collect();
        out
    }

    /// The `/ResourceTypes/{id}` representation (RFC 7643 §6).
    pub fn resource_type_json(&self, base_url: &str) -> Value {
        let base = base_url.trim_end_matches('/');
        json!({
            "schemas": [urn::RESOURCE_TYPE],
            "id": self.kind.name(),
            "name": self.kind.name(),
            "endpoint": self.kind.endpoint(),
            "description": self.description,
            "schema": self.core.id,
            "schemaExtensions": self.extensions.iter().map(|(s, req)| json!({"schema": s.id, "required": req})).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{}/ResourceTypes/{}", base, self.kind.name()),
            }
        })
    }
}

/// Splits `urn:…:Schema:attr.sub` into (`urn:…:Schema`, `attr.sub`). A URN path's attribute is
/// the part after the last `:`; a path without `urn:` has no prefix.
pub fn split_urn(path: &str) -> (Option<&str>, &str) {
    // `get` rather than slicing: client keys may start with a multi-byte character.
    match path.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("urn:") && path.len() > 4 => match path.rfind(':') {
            Some(i) => (Some(&path[..i]), &path[i + 1..]),
            None => (None, path),
        },
        _ => (None, path),
    }
}

/// The User and Group resource types, and lookups by kind.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRegistry {
    pub user: ResourceSchema,
    pub group: ResourceSchema,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        SchemaRegistry {
            user: ResourceSchema::user(),
            group: ResourceSchema::group(),
        }
    }
}

impl SchemaRegistry {
    /// One copy of this registry for the whole process: every tenant of one connector kind
    /// describes the same resources, and a thousand tenants each holding their own copy made
    /// every request walk a schema no other recent request had touched (CPU-cache misses that
    /// `perf` showed in schema resolution and projection only when lookups were spread over
    /// 1,000 tenants; `scripts/bench-tenants.sh`). A handful of distinct registries exist (one per
    /// connector kind), so a linear search of the interned ones is enough.
    pub fn interned(self) -> Arc<SchemaRegistry> {
        static INTERNED: OnceLock<Mutex<Vec<Arc<SchemaRegistry>>>> = OnceLock::new();
        let mut all = INTERNED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(same) = all.iter().find(|r| ***r == self) {
            return same.clone();
        }
        let shared = Arc::new(self);
        all.push(shared.clone());
        shared
    }

    pub fn get(&self, kind: ResourceKind) -> &ResourceSchema {
        match kind {
            ResourceKind::User => &self.user,
            ResourceKind::Group => &self.group,
        }
    }

    /// Marks a core attribute of a resource type `immutable` (RFC 7643 §7: set on create, never
    /// changed), for a vendor that cannot change it (Tableau user names): published in
    /// `/Schemas`, and a change is refused with `400 mutability` before anything is stored.
    pub fn make_immutable(&mut self, kind: ResourceKind, name: &str) {
        let rs = match kind {
            ResourceKind::User => &mut self.user,
            ResourceKind::Group => &mut self.group,
        };
        if let Some(a) = rs
            .core
            .attributes
            .iter_mut()
            .find(|a| a.name.eq_ignore_ascii_case(name))
        {
            a.mutability = Mutability::Immutable;
        }
    }

    /// Marks a core attribute of a resource type `required` (a vendor that cannot do without
    /// it, e.g. Sisense's email): published in `/Schemas` and enforced on create and replace.
    pub fn require(&mut self, kind: ResourceKind, name: &str) {
        let rs = match kind {
            ResourceKind::User => &mut self.user,
            ResourceKind::Group => &mut self.group,
        };
        if let Some(a) = rs
            .core
            .attributes
            .iter_mut()
            .find(|a| a.name.eq_ignore_ascii_case(name))
        {
            a.required = true;
            // A multi-valued complex attribute is only there with a value (an email entry
            // without an address is no email): testers that fill required attributes only
            // would otherwise send `{"primary": true}`.
            if let Some(v) = a
                .sub_attributes
                .iter_mut()
                .find(|s| s.name.eq_ignore_ascii_case("value"))
            {
                v.required = true;
            }
        }
    }

    pub fn resource_types(&self) -> [&ResourceSchema; 2] {
        [&self.user, &self.group]
    }

    /// Every published schema (core and extensions), in a stable order.
    pub fn schemas(&self) -> Vec<&Schema> {
        let mut out = Vec::new();
        for rs in self.resource_types() {
            out.push(&rs.core);
            for (s, _) in &rs.extensions {
                if !out.iter().any(|o: &&Schema| o.id == s.id) {
                    out.push(s);
                }
            }
        }
        out
    }

    pub fn schema(&self, id: &str) -> Option<&Schema> {
        self.schemas()
            .into_iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
    }
}

fn common_attributes() -> Vec<AttributeDef> {
    use Mutability::*;
    vec![
        AttributeDef::string(
            "id",
            "Unique identifier for the SCIM resource, issued by the service provider.",
        )
        .case_exact()
        .mutability(ReadOnly)
        .returned(Returned::Always)
        .uniqueness(Uniqueness::Server),
        AttributeDef::string(
            "externalId",
            "Identifier of the resource as defined by the provisioning client.",
        )
        .case_exact(),
        AttributeDef::complex(
            "meta",
            "Resource metadata.",
            vec![
                AttributeDef::string("resourceType", "Name of the resource type.")
                    .case_exact()
                    .mutability(ReadOnly),
                AttributeDef::of_type(
                    "created",
                    AttrType::DateTime,
                    "When the resource was added.",
                )
                .mutability(ReadOnly),
                AttributeDef::of_type(
                    "lastModified",
                    AttrType::DateTime,
                    "When the resource was last updated.",
                )
                .mutability(ReadOnly),
                AttributeDef::reference("location", "URI of the resource.", &["uri"])
                    .mutability(ReadOnly),
                AttributeDef::string("version", "Version (ETag) of the resource.")
                    .case_exact()
                    .mutability(ReadOnly),
            ],
        )
        .mutability(ReadOnly),
    ]
}

/// A multi-valued complex attribute with the usual `value`, `display`, `type`, `primary` sub-attributes.
fn multi_complex(
    name: &str,
    description: &str,
    value: AttributeDef,
    types: &[&str],
) -> AttributeDef {
    AttributeDef::complex(
        name,
        description,
        vec![
            value,
            AttributeDef::string(
                "display",
                "A human-readable name, primarily used for display purposes.",
            ),
            AttributeDef::string("type", "A label indicating the attribute's function.")
                .canonical(types),
            AttributeDef::of_type(
                "primary",
                AttrType::Boolean,
                "Indicates the primary or preferred value.",
            ),
        ],
    )
    .multi()
}

/// RFC 7643 §4.1 and §8.7.1.
pub fn core_user_schema() -> Schema {
    use Mutability::*;
    let s = AttributeDef::string;
    let attributes = vec![
        s(
            "userName",
            "Unique identifier for the User, used by the user to directly authenticate.",
        )
        .required()
        .uniqueness(Uniqueness::Server),
        AttributeDef::complex(
            "name",
            "The components of the user's real name.",
            vec![
                s("formatted", "The full name, formatted for display."),
                s("familyName", "The family name of the User."),
                s("givenName", "The given name of the User."),
                s("middleName", "The middle name(s) of the User."),
                s("honorificPrefix", "The honorific prefix(es) of the User."),
                s("honorificSuffix", "The honorific suffix(es) of the User."),
            ],
        ),
        s(
            "displayName",
            "The name of the User, suitable for display to end-users.",
        ),
        s(
            "nickName",
            "The casual way to address the user in real life.",
        ),
        AttributeDef::reference(
            "profileUrl",
            "A fully qualified URL pointing to a page representing the User's online profile.",
            &["external"],
        ),
        s("title", "The user's title, such as \"Vice President\"."),
        s(
            "userType",
            "Used to identify the relationship between the organization and the user.",
        ),
        s(
            "preferredLanguage",
            "Indicates the User's preferred written or spoken language.",
        ),
        s(
            "locale",
            "Used to indicate the User's default location for purposes of localizing items.",
        ),
        s(
            "timezone",
            "The User's time zone in the 'Olson' time zone database format.",
        ),
        AttributeDef::of_type(
            "active",
            AttrType::Boolean,
            "A Boolean value indicating the User's administrative status.",
        ),
        s("password", "The User's cleartext password.")
            .mutability(WriteOnly)
            .returned(Returned::Never),
        multi_complex(
            "emails",
            "Email addresses for the user.",
            s("value", "Email addresses for the user."),
            &["work", "home", "other"],
        ),
        multi_complex(
            "phoneNumbers",
            "Phone numbers for the User.",
            s("value", "Phone number of the User."),
            &["work", "home", "mobile", "fax", "pager", "other"],
        ),
        multi_complex(
            "ims",
            "Instant messaging addresses for the User.",
            s("value", "Instant messaging address for the User."),
            &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
        ),
        multi_complex(
            "photos",
            "URLs of photos of the User.",
            AttributeDef::reference("value", "URL of a photo of the User.", &["external"]),
            &["photo", "thumbnail"],
        ),
        AttributeDef::complex(
            "addresses",
            "A physical mailing address for this User.",
            vec![
                s(
                    "formatted",
                    "The full mailing address, formatted for display.",
                ),
                s("streetAddress", "The full street address component."),
                s("locality", "The city or locality component."),
                s("region", "The state or region component."),
                s("postalCode", "The zip code or postal code component."),
                s("country", "The country name component."),
                s("type", "A label indicating the attribute's function.")
                    .canonical(&["work", "home", "other"]),
                AttributeDef::of_type(
                    "primary",
                    AttrType::Boolean,
                    "Indicates the primary or preferred value.",
                ),
            ],
        )
        .multi(),
        AttributeDef::complex(
            "groups",
            "A list of groups to which the user belongs.",
            vec![
                AttributeDef::string("value", "The identifier of the User's group.")
                    .case_exact()
                    .mutability(ReadOnly),
                AttributeDef::reference(
                    "$ref",
                    "The URI of the corresponding 'Group' resource.",
                    &["Group"],
                )
                .mutability(ReadOnly),
                s("display", "A human-readable name.").mutability(ReadOnly),
                s(
                    "type",
                    "A label indicating the membership: 'direct' or 'indirect'.",
                )
                .canonical(&["direct", "indirect"])
                .mutability(ReadOnly),
            ],
        )
        .multi()
        .mutability(ReadOnly),
        multi_complex(
            "entitlements",
            "A list of entitlements for the User.",
            s("value", "The value of an entitlement."),
            &[],
        ),
        multi_complex(
            "roles",
            "A list of roles for the User.",
            s("value", "The value of a role."),
            &[],
        ),
        multi_complex(
            "x509Certificates",
            "A list of certificates issued to the User.",
            AttributeDef::of_type(
                "value",
                AttrType::Binary,
                "The value of an X.509 certificate.",
            ),
            &[],
        ),
    ];
    Schema {
        id: urn::CORE_USER.into(),
        name: "User".into(),
        description: "User Account".into(),
        attributes,
    }
}

/// RFC 7643 §4.3 and §8.7.1.
pub fn enterprise_user_schema() -> Schema {
    let s = AttributeDef::string;
    Schema {
        id: urn::ENTERPRISE_USER.into(),
        name: "EnterpriseUser".into(),
        description: "Enterprise User".into(),
        attributes: vec![
            s(
                "employeeNumber",
                "Numeric or alphanumeric identifier assigned to a person.",
            ),
            s("costCenter", "Identifies the name of a cost center."),
            s("organization", "Identifies the name of an organization."),
            s("division", "Identifies the name of a division."),
            s("department", "Identifies the name of a department."),
            AttributeDef::complex(
                "manager",
                "The User's manager.",
                vec![
                    s(
                        "value",
                        "The id of the SCIM resource representing the User's manager.",
                    )
                    .case_exact(),
                    AttributeDef::reference(
                        "$ref",
                        "The URI of the SCIM resource representing the User's manager.",
                        &["User"],
                    ),
                    s("displayName", "The displayName of the User's manager.")
                        .mutability(Mutability::ReadOnly),
                ],
            ),
        ],
    }
}

/// RFC 7643 §4.2 and §8.7.1.
pub fn core_group_schema() -> Schema {
    let s = AttributeDef::string;
    Schema {
        id: urn::CORE_GROUP.into(),
        name: "Group".into(),
        description: "Group".into(),
        attributes: vec![
            s("displayName", "A human-readable name for the Group.")
                .required()
                .uniqueness(Uniqueness::Server),
            AttributeDef::complex(
                "members",
                "A list of members of the Group.",
                vec![
                    s("value", "Identifier of the member of this Group.")
                        .case_exact()
                        .mutability(Mutability::Immutable),
                    AttributeDef::reference(
                        "$ref",
                        "The URI of the corresponding member resource.",
                        &["User", "Group"],
                    )
                    .mutability(Mutability::Immutable),
                    s("display", "A human-readable name of the member.")
                        .mutability(Mutability::Immutable),
                    s("type", "A label indicating the type of resource.")
                        .canonical(&["User", "Group"])
                        .mutability(Mutability::Immutable),
                ],
            )
            .multi(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_case_insensitively_and_by_urn() {
        let u = ResourceSchema::user();
        assert_eq!(u.resolve(None, "USERNAME").unwrap().def.name, "userName");
        assert_eq!(u.resolve(None, "id").unwrap().def.name, "id");
        let r = u
            .resolve(
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"),
                "employeenumber",
            )
            .unwrap();
        assert_eq!(r.def.name, "employeeNumber");
        assert_eq!(r.location, AttrLocation::Extension(urn::ENTERPRISE_USER));
        assert_eq!(
            u.resolve(Some(urn::CORE_USER), "emails").unwrap().def.name,
            "emails"
        );
        assert!(u.resolve(None, "employeeNumber").is_none());
        assert!(u.resolve(Some("urn:x:y"), "userName").is_none());
    }

    #[test]
    fn split_urn_takes_last_colon() {
        assert_eq!(
            split_urn("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            (Some(urn::ENTERPRISE_USER), "manager.value")
        );
        assert_eq!(split_urn("name.givenName"), (None, "name.givenName"));
        assert_eq!(
            split_urn("aü:x"),
            (None, "aü:x"),
            "no slicing inside a character"
        );
        assert_eq!(split_urn("ü"), (None, "ü"));
        assert_eq!(split_urn("urn:"), (None, "urn:"));
    }

    #[test]
    fn restrict_keeps_required_and_listed() {
        let u = ResourceSchema::user().restrict(&["name.givenName", "emails", "active"]);
        let names: Vec<_> = u.core.attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["userName", "name", "active", "emails"]);
        assert_eq!(u.core.attr("name").unwrap().sub_attributes.len(), 1);
        assert!(u.extensions.is_empty());
        let u =
            ResourceSchema::user().restrict(&[&format!("{}:employeeNumber", urn::ENTERPRISE_USER)]);
        assert_eq!(u.extensions.len(), 1);
        assert_eq!(u.extensions[0].0.attributes.len(), 1);
    }

    #[test]
    fn schema_json_has_no_nulls_and_camel_case() {
        let j = core_user_schema().to_json("http://x/scim/v2");
        let text = j.to_string();
        assert!(!text.contains("null"));
        assert!(text.contains("\"readWrite\""));
        assert!(text.contains("\"writeOnly\""));
    }
}
