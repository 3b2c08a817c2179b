//! The access review (issue 13; CONTRACT §5 `scim-bridge report access`): one row per vendor
//! account of every vendor tenant — who holds which role in which analytics tool, whether the
//! IdP manages the account, and when it was last used — with one person's accounts across
//! tenants grouped by the configured key (`[report] person_key`, default the email).
//!
//! It reads only the store: each tenant's directory (the SCIM users linked to a vendor user,
//! their groups) and the engine's records (what the vendor last confirmed, which users the IdP
//! wrote, which vendor users the bridge found rather than made, the vendor's role names). So a
//! running bridge (the admin API, engines at hand) and the CLI on a stopped bridge
//! (`--data-dir`: the store and the config only) give the same answer, and neither calls a
//! vendor: the review is as fresh as the last sync, whose time the dashboard shows beside it.
//!
//! What is read and what it means:
//! - **a vendor account** is a directory user linked to a vendor id. A user the IdP asked for
//!   that the vendor has not confirmed yet is not one (the plan shows it); a vendor user the IdP
//!   deleted that the vendor keeps deactivated has left the directory and is not listed;
//! - **managed**: `idp` — the bridge created the vendor user for the IdP; `adopted` — it existed
//!   at the vendor and the IdP has since written it (the role rules govern it now);
//!   `vendor-only` — the IdP never wrote it: an orphan the IdP does not know;
//! - **role** is the vendor's own name for the role, from the names the last sync stored; a
//!   store written before that (or a role the vendor no longer lists) shows the vendor's id;
//! - **active**: what the vendor confirmed, else (Tableau, whose deactivation is the
//!   `Unlicensed` site role) the role, else the SCIM `active`;
//! - **last login** is the vendor's, as the last sync read it (none from ThoughtSpot, whose API
//!   reports only a first sign-in).
//!
//! Output: CSV (RFC 4180), JSON Lines, or a self-contained HTML page. Every value here can come
//! from outside (a userName, a group name), so each format escapes for its reader: quoting in
//! CSV (and no cell a spreadsheet would run as a formula), JSON string escapes, HTML entities.

use crate::config::{PersonKey, TenantConfig};
use crate::engine::observe::ROLE_NAMES;
use crate::engine::state::{AppliedUser, Records};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::store::directory::{str_at, Directory};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::Write;

pub use crate::engine::state::Managed;

/// One vendor account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRow {
    /// The grouping key across tenants (`[report] person_key`), lower-cased; `None` when the
    /// account has no value for it.
    pub person: Option<String>,
    pub tenant: String,
    /// The vendor kind (`sisense`, `tableau`, `thoughtspot`, `metabase`).
    pub vendor: String,
    pub vendor_id: String,
    pub login: String,
    pub email: Option<String>,
    pub active: bool,
    /// The vendor's role name (its id when the name is not known); `None` when unknown.
    pub role: Option<String>,
    /// Names of the mirrored groups the account is in, sorted.
    pub groups: Vec<String>,
    /// RFC 3339, UTC; `None` when the vendor reports none.
    pub last_login: Option<String>,
    pub managed: Managed,
    pub scim_id: String,
}

/// The columns, in order (CONTRACT §5, with the grouping key first).
pub const COLUMNS: [&str; 12] = [
    "person",
    "tenant",
    "vendor",
    "vendor_id",
    "login",
    "email",
    "active",
    "role",
    "groups",
    "last_login",
    "managed",
    "scim_id",
];

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no tenant {0:?} in the config")]
    UnknownTenant(String),
    #[error("tenant {0:?} uses the local connector: it has no vendor accounts to review")]
    LocalTenant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The output formats of `report access --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    Html,
}

impl Format {
    pub const CHOICES: [(&'static str, Format); 3] = [
        ("csv", Format::Csv),
        ("jsonl", Format::Jsonl),
        ("html", Format::Html),
    ];

    /// The HTTP content type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Jsonl => "application/jsonl; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Format::CHOICES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("unknown format {s:?}: expected csv, jsonl or html"))
    }
}

/// Every vendor account of `tenants` (of `only` alone when given), grouped by person: sorted by
/// person (accounts without one last), then tenant, then login.
pub fn rows(
    store: &Store,
    tenants: &[TenantConfig],
    person_key: PersonKey,
    only: Option<&str>,
) -> Result<Vec<AccessRow>, AccessError> {
    let chosen: Vec<&TenantConfig> = match only {
        Some(id) => vec![find_tenant(tenants, id)?],
        None => tenants
            .iter()
            .filter(|t| t.vendor.kind() != "local")
            .collect(),
    };
    let mut out = Vec::new();
    for t in chosen {
        let review = TenantReview::open(store, t)?;
        for sid in review.dir.ids(ResourceKind::User) {
            if let Some(row) = review.row(&sid?, person_key)? {
                out.push(row);
            }
        }
    }
    out.sort_by(|a, b| order(a).cmp(&order(b)));
    Ok(out)
}

/// One page of a tenant's accounts for the console, and how many accounts the tenant has.
///
/// In the directory's own order (by SCIM id, which is creation order: the order of the
/// console's user list), not grouped by person: grouping is across tenants, and sorting a
/// 100,000-user tenant to show 50 rows would read every user. Here only the page's rows are
/// read in full; the rest are counted from the engine's applied-state records (one per linked
/// user), so a page costs about the same at any depth.
pub fn page(
    store: &Store,
    tenants: &[TenantConfig],
    person_key: PersonKey,
    tenant: &str,
    offset: usize,
    limit: usize,
) -> Result<(Vec<AccessRow>, usize), AccessError> {
    let t = find_tenant(tenants, tenant)?;
    let review = TenantReview::open(store, t)?;
    let mut total = 0usize;
    let mut out = Vec::new();
    for kv in review.dir.records(APPLIED_USERS) {
        let (key, _) = kv?;
        let in_page = total >= offset && total - offset < limit;
        total += 1;
        if in_page {
            if let Some(row) = review.row(&key[APPLIED_USERS.len()..], person_key)? {
                out.push(row);
            }
        }
    }
    Ok((out, total))
}

/// The engine's applied-state records (`au/{scim id}`, see `engine::state`): one per user
/// linked to a vendor user.
const APPLIED_USERS: &str = "au/";

fn find_tenant<'a>(tenants: &'a [TenantConfig], id: &str) -> Result<&'a TenantConfig, AccessError> {
    let t = tenants
        .iter()
        .find(|t| t.id.as_str() == id)
        .ok_or_else(|| AccessError::UnknownTenant(id.to_string()))?;
    if t.vendor.kind() == "local" {
        return Err(AccessError::LocalTenant(id.to_string()));
    }
    Ok(t)
}

fn order(r: &AccessRow) -> (bool, &Option<String>, &str, String, &str) {
    (
        r.person.is_none(),
        &r.person,
        &r.tenant,
        r.login.to_lowercase(),
        &r.scim_id,
    )
}

/// What one tenant's rows need besides each user's own records, read once.
struct TenantReview {
    tenant: String,
    vendor: &'static str,
    dir: Directory,
    role_names: HashMap<String, String>,
    group_names: HashMap<String, String>,
}

impl TenantReview {
    fn open(store: &Store, t: &TenantConfig) -> Result<TenantReview, StoreError> {
        // The engine keeps a vendor tenant's directory in the tree named for its vendor kind
        // (the `purpose` each connector opens its engine with).
        let vendor = t.vendor.kind();
        let dir = Directory::open(store, t.id.as_str(), vendor, SchemaRegistry::default())?;
        let role_names = match Records(&dir).flag(ROLE_NAMES)? {
            // A record this module cannot read only costs the names: ids are shown instead.
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(tenant = %t.id.as_str(), error = %e, "stored role names unreadable; roles shown by id");
                HashMap::new()
            }),
            None => HashMap::new(),
        };
        let mut group_names = HashMap::new();
        for gid in dir.ids(ResourceKind::Group) {
            let gid = gid?;
            if let Some(g) = dir.load(ResourceKind::Group, &gid)? {
                if let Some(name) = str_at(&g, "displayName") {
                    group_names.insert(gid, name.to_string());
                }
            }
        }
        Ok(TenantReview {
            tenant: t.id.as_str().to_string(),
            vendor,
            dir,
            role_names,
            group_names,
        })
    }

    /// The row of directory user `sid`; `None` when it is not linked to a vendor user.
    fn row(&self, sid: &str, person_key: PersonKey) -> Result<Option<AccessRow>, StoreError> {
        let dir = &self.dir;
        let Some(vendor_id) = dir.vendor_id(ResourceKind::User, sid)? else {
            return Ok(None);
        };
        let Some(doc) = dir.load(ResourceKind::User, sid)? else {
            return Ok(None);
        };
        let applied: Option<AppliedUser> = Records(dir).applied_user(sid)?;
        let profile = applied.as_ref().and_then(|a| a.profile.as_ref());
        let role_id = applied.as_ref().and_then(|a| a.role.clone());
        let role = role_id.as_deref().map(|id| self.role_name(id));
        let active = applied
            .as_ref()
            .and_then(|a| a.active)
            .or_else(|| {
                // Tableau has no activation flag: an Unlicensed user has no access.
                (self.vendor == "tableau")
                    .then_some(role_id.as_deref())
                    .flatten()
                    .map(|r| !r.eq_ignore_ascii_case("Unlicensed"))
            })
            .unwrap_or_else(|| doc.get("active").and_then(Value::as_bool).unwrap_or(true));
        let mut groups: Vec<String> = dir
            .groups_of(sid)?
            .iter()
            .filter_map(|g| self.group_names.get(g).cloned())
            .collect();
        groups.sort_by_key(|g| g.to_lowercase());
        let login = profile
            .map(|p| p.login.clone())
            .filter(|l| !l.is_empty())
            .or_else(|| str_at(&doc, "userName").map(str::to_string))
            .unwrap_or_default();
        let email = primary_email(&doc)
            .map(str::to_string)
            .or_else(|| profile.and_then(|p| p.email.clone()));
        Ok(Some(AccessRow {
            person: person_of(&doc, profile.and_then(|p| p.email.as_deref()), person_key),
            tenant: self.tenant.clone(),
            vendor: self.vendor.to_string(),
            vendor_id,
            login,
            email,
            active,
            role,
            groups,
            last_login: applied.as_ref().and_then(|a| a.last_login.clone()),
            managed: Managed::of(dir, sid)?,
            scim_id: sid.to_string(),
        }))
    }

    fn role_name(&self, id: &str) -> String {
        if id == crate::engine::adapter::NO_ROLE {
            // As the audit log names it (the role table's name for "no role group").
            return "(no role group)".into();
        }
        self.role_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

/// The primary email of a SCIM user (else its first).
fn primary_email(doc: &Value) -> Option<&str> {
    let emails = doc.get("emails")?.as_array()?;
    emails
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| emails.first())
        .and_then(|e| str_at(e, "value"))
        .filter(|e| !e.is_empty())
}

/// The grouping key of an account, lower-cased (keys compare without case). The email falls
/// back to the vendor's when the SCIM user has none.
fn person_of(doc: &Value, vendor_email: Option<&str>, key: PersonKey) -> Option<String> {
    let v = match key {
        PersonKey::Email => primary_email(doc).or(vendor_email),
        PersonKey::UserName => str_at(doc, "userName"),
        PersonKey::ExternalId => str_at(doc, "externalId"),
    };
    v.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_lowercase)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Writes `rows` in `format` to `out`, row by row (a 100,000-row review is never one string).
pub fn write(rows: &[AccessRow], format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        Format::Csv => write_csv(rows, out),
        Format::Jsonl => write_jsonl(rows, out),
        Format::Html => write_html(rows, out),
    }
}

/// `rows` in `format`, as one string (the admin API's body, tests).
pub fn render(rows: &[AccessRow], format: Format) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write(rows, format, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// The row's cells as text, in [`COLUMNS`] order. Groups are joined with `"; "` (JSON Lines
/// keeps them as an array).
fn cells(r: &AccessRow) -> [String; 12] {
    [
        r.person.clone().unwrap_or_default(),
        r.tenant.clone(),
        r.vendor.clone(),
        r.vendor_id.clone(),
        r.login.clone(),
        r.email.clone().unwrap_or_default(),
        r.active.to_string(),
        r.role.clone().unwrap_or_default(),
        r.groups.join("; "),
        r.last_login.clone().unwrap_or_default(),
        r.managed.as_str().to_string(),
        r.scim_id.clone(),
    ]
}

fn write_csv(rows: &[AccessRow], out: &mut dyn Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(out);
    let header: Vec<String> = COLUMNS.iter().map(|c| csv_field(c)).collect();
    write!(w, "{}\r\n", header.join(","))?;
    for r in rows {
        let line: Vec<String> = cells(r).iter().map(|c| csv_field(c)).collect();
        write!(w, "{}\r\n", line.join(","))?;
    }
    w.flush()
}

/// One CSV field (RFC 4180: quoted when it holds a comma, a quote or a line break, quotes
/// doubled). A value a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or
/// carriage return first: a hostile userName such as `=HYPERLINK(…)`) is prefixed with `'`,
/// the usual neutralisation, so that opening the review never executes what a user named
/// themselves.
fn csv_field(v: &str) -> String {
    let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let v = if formula {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\r', '\n']) || formula {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

fn write_jsonl(rows: &[AccessRow], out: &mut dyn Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(out);
    for r in rows {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Text for HTML content or a quoted attribute value.
fn html_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}

const HTML_STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d232a}\
h1{font-size:1.3rem}p.meta{color:#555}\
table{border-collapse:collapse;font-size:.85rem}\
th,td{border:1px solid #ccd;padding:.25rem .5rem;text-align:left;vertical-align:top}\
th{background:#eef;position:sticky;top:0}\
tbody.alt td{background:#f6f7fb}\
td.managed-vendor-only{color:#a00;font-weight:600}\
td.inactive{color:#777}";

/// A self-contained page: inline style, no script, no outside resource. One `<tbody>` per
/// person, shaded in turn, so one person's accounts read as a block.
fn write_html(rows: &[AccessRow], out: &mut dyn Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(out);
    let people: HashSet<&Option<String>> = rows.iter().map(|r| &r.person).collect();
    let orphans = rows
        .iter()
        .filter(|r| r.managed == Managed::VendorOnly)
        .count();
    write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Access review</title><style>{HTML_STYLE}</style></head><body>\n\
         <h1>Access review</h1>\n<p class=\"meta\">{} accounts, {} people, {} vendor-only \
         (not known to the IdP)</p>\n<table>\n<thead><tr>",
        rows.len(),
        people.len(),
        orphans
    )?;
    for c in COLUMNS {
        write!(w, "<th scope=\"col\">{}</th>", html_escape(c))?;
    }
    w.write_all(b"</tr></thead>\n")?;
    let mut current: Option<&Option<String>> = None;
    let mut alt = false;
    for r in rows {
        if current != Some(&r.person) {
            if current.is_some() {
                w.write_all(b"</tbody>\n")?;
            }
            alt = !alt;
            w.write_all(if alt {
                b"<tbody>\n"
            } else {
                b"<tbody class=\"alt\">\n"
            })?;
            current = Some(&r.person);
        }
        w.write_all(b"<tr>")?;
        for (i, cell) in cells(r).iter().enumerate() {
            let class = match COLUMNS[i] {
                "managed" => format!(" class=\"managed-{}\"", r.managed.as_str()),
                "active" if !r.active => " class=\"inactive\"".to_string(),
                _ => String::new(),
            };
            write!(w, "<td{class}>{}</td>", html_escape(cell))?;
        }
        w.write_all(b"</tr>\n")?;
    }
    if current.is_some() {
        w.write_all(b"</tbody>\n")?;
    }
    w.write_all(b"</table>\n</body></html>\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(person: Option<&str>, tenant: &str, login: &str) -> AccessRow {
        AccessRow {
            person: person.map(str::to_string),
            tenant: tenant.into(),
            vendor: "sisense".into(),
            vendor_id: "v1".into(),
            login: login.into(),
            email: person.map(str::to_string),
            active: true,
            role: Some("Viewer".into()),
            groups: vec!["a".into(), "b".into()],
            last_login: Some("2024-01-15T09:30:00Z".into()),
            managed: Managed::Idp,
            scim_id: "s1".into(),
        }
    }

    #[test]
    fn managed_follows_the_marks() {
        assert_eq!(Managed::from_marks(false, false), Managed::VendorOnly);
        assert_eq!(Managed::from_marks(false, true), Managed::VendorOnly);
        assert_eq!(Managed::from_marks(true, true), Managed::Adopted);
        assert_eq!(Managed::from_marks(true, false), Managed::Idp);
        assert_eq!(
            serde_json::to_value(Managed::VendorOnly).unwrap(),
            "vendor-only"
        );
    }

    #[test]
    fn csv_quotes_as_rfc_4180_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@sum"), "\"'@sum\"");
        let text = render(&[row(Some("p@x.io"), "t", "a,b")], Format::Csv);
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "p@x.io,t,sisense,v1,\"a,b\",p@x.io,true,Viewer,a; b,2024-01-15T09:30:00Z,idp,s1"
        );
        assert_eq!(lines.next(), Some(""));
    }

    #[test]
    fn html_escapes_every_cell_and_is_self_contained() {
        let mut r = row(Some("p@x.io"), "t", "<script>alert('x')</script>");
        r.groups = vec!["R&D \"core\"".into()];
        let page = render(&[r], Format::Html);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(page.contains("R&amp;D &quot;core&quot;"));
        assert!(!page.contains("src=") && !page.contains("href="));
    }

    #[test]
    fn jsonl_is_one_object_per_row() {
        let rows = [row(Some("a@x.io"), "t1", "a"), row(None, "t2", "b")];
        let text = render(&rows, Format::Jsonl);
        let back: Vec<AccessRow> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, rows);
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("CSV".parse::<Format>(), Ok(Format::Csv));
        assert_eq!("jsonl".parse::<Format>(), Ok(Format::Jsonl));
        assert!("xml".parse::<Format>().is_err());
    }

    #[test]
    fn person_key_reads_the_scim_user_without_case() {
        let doc = serde_json::json!({
            "userName": "Ann",
            "externalId": "X-1",
            "emails": [{"value": "other@x.io"}, {"value": "Ann@X.io", "primary": true}],
        });
        assert_eq!(
            person_of(&doc, None, PersonKey::Email).as_deref(),
            Some("ann@x.io")
        );
        assert_eq!(
            person_of(&doc, None, PersonKey::UserName).as_deref(),
            Some("ann")
        );
        assert_eq!(
            person_of(&doc, None, PersonKey::ExternalId).as_deref(),
            Some("x-1")
        );
        let bare = serde_json::json!({"userName": "bob"});
        assert_eq!(
            person_of(&bare, Some("Bob@Y.io"), PersonKey::Email).as_deref(),
            Some("bob@y.io")
        );
        assert_eq!(person_of(&bare, None, PersonKey::ExternalId), None);
    }
}
