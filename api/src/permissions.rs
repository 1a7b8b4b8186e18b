//! The permission matrix: which route needs which permission, and which role holds
//! which permission. Enforced in one place, [`crate::guard`], before any handler runs.
//!
//! A new route gets one line in [`ROUTE_ACCESS`]; `tests` fail for a route of the
//! OpenAPI table without one, and the guard refuses (500, logged) a served route that
//! has none, so a forgotten line fails closed. `docs/security.md` carries the matrix
//! as [`markdown_matrix`] renders it (checked by a test).

use ris_schemas::security::Role;

/// What a caller may do. Each route needs exactly one (or is [`Access::Open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Create, list, show and delete tenants; set their limits.
    TenantsManage,
    /// Create, list and revoke API keys.
    ApiKeysManage,
    AgentsRead,
    /// Create enrollment tokens.
    AgentsEnroll,
    TasksRead,
    TasksSubmit,
    TasksCancel,
    DeadLettersRead,
    /// Replay or discard dead letters.
    DeadLettersManage,
    WebhooksRead,
    WebhooksManage,
    HooksRead,
    HooksManage,
    IntegrationsRead,
    /// Integrations hold broker credentials.
    IntegrationsManage,
    SettingsRead,
    SettingsWrite,
    EventsRead,
    /// List and show Docker services, their revisions and their logs.
    ServicesRead,
    /// Declare, scale, restart and delete Docker services.
    ServicesManage,
    AuditRead,
    /// List, add and retire the keys that sign messages to agents and access tokens.
    SigningKeysManage,
    /// Create and list users.
    UsersManage,
    /// Set up one's own TOTP (users only, not API keys).
    OwnAccount,
}

/// Whether a permission acts inside one tenant (a tenant credential is needed) or at
/// platform level (the platform admin, or a tenant credential on its own tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    /// Platform admin, and tenant credentials where the role allows (own tenant only).
    Any,
}

impl Permission {
    pub const ALL: [Permission; 24] = [
        Permission::TenantsManage,
        Permission::ApiKeysManage,
        Permission::AgentsRead,
        Permission::AgentsEnroll,
        Permission::TasksRead,
        Permission::TasksSubmit,
        Permission::TasksCancel,
        Permission::DeadLettersRead,
        Permission::DeadLettersManage,
        Permission::WebhooksRead,
        Permission::WebhooksManage,
        Permission::HooksRead,
        Permission::HooksManage,
        Permission::IntegrationsRead,
        Permission::IntegrationsManage,
        Permission::SettingsRead,
        Permission::SettingsWrite,
        Permission::EventsRead,
        Permission::ServicesRead,
        Permission::ServicesManage,
        Permission::AuditRead,
        Permission::SigningKeysManage,
        Permission::UsersManage,
        Permission::OwnAccount,
    ];

    /// `tasks:submit`, ...: how errors and the docs name it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::TenantsManage => "tenants:manage",
            Permission::ApiKeysManage => "api-keys:manage",
            Permission::AgentsRead => "agents:read",
            Permission::AgentsEnroll => "agents:enroll",
            Permission::TasksRead => "tasks:read",
            Permission::TasksSubmit => "tasks:submit",
            Permission::TasksCancel => "tasks:cancel",
            Permission::DeadLettersRead => "dead-letters:read",
            Permission::DeadLettersManage => "dead-letters:manage",
            Permission::WebhooksRead => "webhooks:read",
            Permission::WebhooksManage => "webhooks:manage",
            Permission::HooksRead => "hooks:read",
            Permission::HooksManage => "hooks:manage",
            Permission::IntegrationsRead => "integrations:read",
            Permission::IntegrationsManage => "integrations:manage",
            Permission::SettingsRead => "settings:read",
            Permission::SettingsWrite => "settings:write",
            Permission::EventsRead => "events:read",
            Permission::ServicesRead => "services:read",
            Permission::ServicesManage => "services:manage",
            Permission::AuditRead => "audit:read",
            Permission::SigningKeysManage => "signing-keys:manage",
            Permission::UsersManage => "users:manage",
            Permission::OwnAccount => "own-account",
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            Permission::TenantsManage
            | Permission::ApiKeysManage
            | Permission::AuditRead
            | Permission::SigningKeysManage
            | Permission::UsersManage
            | Permission::OwnAccount => Scope::Any,
            _ => Scope::Tenant,
        }
    }
}

/// THE matrix: the roles that hold each permission.
pub fn roles_with(p: Permission) -> &'static [Role] {
    use Role::*;
    match p {
        Permission::TenantsManage | Permission::SigningKeysManage => &[PlatformAdmin],
        Permission::ApiKeysManage | Permission::AuditRead | Permission::UsersManage => {
            &[PlatformAdmin, TenantAdmin]
        }
        Permission::OwnAccount => &[PlatformAdmin, TenantAdmin, Operator, Viewer],
        Permission::SettingsWrite | Permission::IntegrationsManage => &[TenantAdmin],
        Permission::AgentsEnroll
        | Permission::TasksSubmit
        | Permission::TasksCancel
        | Permission::DeadLettersManage
        | Permission::WebhooksManage
        | Permission::HooksManage
        | Permission::ServicesManage => &[TenantAdmin, Operator],
        Permission::AgentsRead
        | Permission::TasksRead
        | Permission::DeadLettersRead
        | Permission::WebhooksRead
        | Permission::HooksRead
        | Permission::IntegrationsRead
        | Permission::SettingsRead
        | Permission::EventsRead
        | Permission::ServicesRead => &[TenantAdmin, Operator, Viewer],
    }
}

pub fn grants(role: Role, p: Permission) -> bool {
    roles_with(p).contains(&role)
}

/// Routes whose credential is not an API key: the handler checks it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// No credential at all (health, metrics, the OpenAPI document).
    Public,
    /// A one-time enrollment token in the body.
    EnrollmentToken,
    /// The agent's heartbeat token (role `agent`).
    AgentToken,
    /// An HMAC signature of the body (inbound hooks).
    Signature,
    /// Email, password and TOTP code in the body (login).
    Password,
    /// A refresh token in the body.
    RefreshToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Needs(Permission),
    Open(Open),
}

use Access::{Needs, Open as O};
use Permission as P;

/// Every route: `(method, path template, access)`.
pub const ROUTE_ACCESS: &[(&str, &str, Access)] = &[
    ("POST", "/v1/tenants", Needs(P::TenantsManage)),
    ("GET", "/v1/tenants", Needs(P::TenantsManage)),
    ("GET", "/v1/tenants/{name}", Needs(P::TenantsManage)),
    ("DELETE", "/v1/tenants/{name}", Needs(P::TenantsManage)),
    ("GET", "/v1/tenants/{name}/limits", Needs(P::TenantsManage)),
    ("PUT", "/v1/tenants/{name}/limits", Needs(P::TenantsManage)),
    ("POST", "/v1/api-keys", Needs(P::ApiKeysManage)),
    ("GET", "/v1/api-keys", Needs(P::ApiKeysManage)),
    ("DELETE", "/v1/api-keys/{id}", Needs(P::ApiKeysManage)),
    ("GET", "/v1/audit", Needs(P::AuditRead)),
    ("GET", "/v1/audit/verify", Needs(P::AuditRead)),
    ("GET", "/v1/signing-keys", Needs(P::SigningKeysManage)),
    ("POST", "/v1/signing-keys", Needs(P::SigningKeysManage)),
    (
        "DELETE",
        "/v1/signing-keys/{kid}",
        Needs(P::SigningKeysManage),
    ),
    ("POST", "/v1/users", Needs(P::UsersManage)),
    ("GET", "/v1/users", Needs(P::UsersManage)),
    ("POST", "/v1/users/me/totp", Needs(P::OwnAccount)),
    ("POST", "/v1/users/me/totp/confirm", Needs(P::OwnAccount)),
    ("POST", "/v1/auth/login", O(Open::Password)),
    ("POST", "/v1/auth/refresh", O(Open::RefreshToken)),
    ("POST", "/v1/auth/logout", O(Open::RefreshToken)),
    ("GET", "/v1/auth/keys", Needs(P::SigningKeysManage)),
    ("POST", "/v1/auth/keys", Needs(P::SigningKeysManage)),
    ("DELETE", "/v1/auth/keys/{kid}", Needs(P::SigningKeysManage)),
    ("GET", "/v1/dead-letters", Needs(P::DeadLettersRead)),
    ("GET", "/v1/dead-letters/{id}", Needs(P::DeadLettersRead)),
    (
        "DELETE",
        "/v1/dead-letters/{id}",
        Needs(P::DeadLettersManage),
    ),
    (
        "POST",
        "/v1/dead-letters/{id}/replay",
        Needs(P::DeadLettersManage),
    ),
    (
        "POST",
        "/v1/agents/enrollment-tokens",
        Needs(P::AgentsEnroll),
    ),
    ("POST", "/v1/agents/enroll", O(Open::EnrollmentToken)),
    ("GET", "/v1/agents", Needs(P::AgentsRead)),
    ("GET", "/v1/agents/{id}", Needs(P::AgentsRead)),
    ("GET", "/v1/agents/{id}/heartbeat", O(Open::AgentToken)),
    ("POST", "/v1/tasks", Needs(P::TasksSubmit)),
    ("GET", "/v1/tasks", Needs(P::TasksRead)),
    ("GET", "/v1/tasks/{id}", Needs(P::TasksRead)),
    ("GET", "/v1/tasks/{id}/output", Needs(P::TasksRead)),
    ("GET", "/v1/tasks/{id}/events", Needs(P::TasksRead)),
    ("GET", "/v1/tasks/{id}/attempts", Needs(P::TasksRead)),
    ("POST", "/v1/tasks/{id}/cancel", Needs(P::TasksCancel)),
    // A job is a batch of tasks: the task permissions cover it.
    ("POST", "/v1/jobs", Needs(P::TasksSubmit)),
    ("GET", "/v1/jobs", Needs(P::TasksRead)),
    ("GET", "/v1/jobs/{id}", Needs(P::TasksRead)),
    ("GET", "/v1/jobs/{id}/tasks", Needs(P::TasksRead)),
    ("POST", "/v1/jobs/{id}/cancel", Needs(P::TasksCancel)),
    ("GET", "/v1/services", Needs(P::ServicesRead)),
    ("PUT", "/v1/services/{name}", Needs(P::ServicesManage)),
    ("GET", "/v1/services/{name}", Needs(P::ServicesRead)),
    ("DELETE", "/v1/services/{name}", Needs(P::ServicesManage)),
    (
        "GET",
        "/v1/services/{name}/revisions",
        Needs(P::ServicesRead),
    ),
    (
        "POST",
        "/v1/services/{name}/scale",
        Needs(P::ServicesManage),
    ),
    (
        "POST",
        "/v1/services/{name}/restart",
        Needs(P::ServicesManage),
    ),
    ("GET", "/v1/services/{name}/logs", Needs(P::ServicesRead)),
    ("POST", "/v1/webhooks", Needs(P::WebhooksManage)),
    ("GET", "/v1/webhooks", Needs(P::WebhooksRead)),
    ("GET", "/v1/webhooks/{id}", Needs(P::WebhooksRead)),
    ("DELETE", "/v1/webhooks/{id}", Needs(P::WebhooksManage)),
    (
        "GET",
        "/v1/webhooks/{id}/deliveries",
        Needs(P::WebhooksRead),
    ),
    (
        "POST",
        "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        Needs(P::WebhooksManage),
    ),
    ("POST", "/v1/hooks", Needs(P::HooksManage)),
    ("GET", "/v1/hooks", Needs(P::HooksRead)),
    ("DELETE", "/v1/hooks/{id}", Needs(P::HooksManage)),
    ("POST", "/v1/hooks/{id}", O(Open::Signature)),
    ("GET", "/v1/settings", Needs(P::SettingsRead)),
    ("PUT", "/v1/settings", Needs(P::SettingsWrite)),
    ("POST", "/v1/integrations", Needs(P::IntegrationsManage)),
    ("GET", "/v1/integrations", Needs(P::IntegrationsRead)),
    (
        "DELETE",
        "/v1/integrations/{name}",
        Needs(P::IntegrationsManage),
    ),
    ("GET", "/v1/events/stream", Needs(P::EventsRead)),
    ("GET", "/v1/openapi.json", O(Open::Public)),
    ("GET", "/healthz", O(Open::Public)),
    ("GET", "/readyz", O(Open::Public)),
    ("GET", "/metrics", O(Open::Public)),
];

/// The access rule of a route, by method and matched path template.
pub fn access_of(method: &str, path: &str) -> Option<Access> {
    ROUTE_ACCESS
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, a)| *a)
}

/// The matrix as the Markdown table in `docs/security.md`.
pub fn markdown_matrix() -> String {
    let roles = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::Operator,
        Role::Viewer,
    ];
    let mut out = String::from("| permission | routes |");
    for r in roles {
        out.push_str(&format!(" {r} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(roles.len()));
    out.push('\n');
    for p in Permission::ALL {
        let routes: Vec<String> = ROUTE_ACCESS
            .iter()
            .filter(|(_, _, a)| *a == Needs(p))
            .map(|(m, path, _)| format!("`{m} {path}`"))
            .collect();
        out.push_str(&format!("| `{}` | {} |", p.name(), routes.join("<br>")));
        for r in roles {
            out.push_str(if grants(r, p) { " ✔ |" } else { " |" });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_has_an_access_rule_and_no_other() {
        let documented: Vec<(&str, &str)> = crate::openapi::ROUTES
            .iter()
            .map(|r| (r.method.as_str(), r.path))
            .collect();
        for (m, p) in &documented {
            assert!(
                access_of(m, p).is_some(),
                "{m} {p} has no line in permissions::ROUTE_ACCESS"
            );
        }
        for (m, p, _) in ROUTE_ACCESS {
            assert!(
                documented.contains(&(*m, *p)),
                "ROUTE_ACCESS lists {m} {p}, which the API does not serve"
            );
        }
    }

    #[test]
    fn every_permission_is_used_and_held() {
        for p in Permission::ALL {
            assert!(ROUTE_ACCESS.iter().any(|(_, _, a)| *a == Needs(p)), "{p:?}");
            assert!(!roles_with(p).is_empty(), "{p:?}");
            assert!(!grants(Role::Agent, p), "agents hold no API permission");
        }
    }

    #[test]
    fn viewer_changes_nothing_and_operator_manages_no_keys() {
        for (m, p, a) in ROUTE_ACCESS {
            if let Needs(perm) = a {
                // Its own TOTP is the one thing a viewer changes.
                if *m != "GET" && *perm != Permission::OwnAccount {
                    assert!(!grants(Role::Viewer, *perm), "viewer may {m} {p}");
                }
            }
        }
        assert!(!grants(Role::Operator, Permission::ApiKeysManage));
        assert!(!grants(Role::Operator, Permission::SettingsWrite));
    }

    #[test]
    fn docs_carry_the_matrix() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let table = markdown_matrix();
        let begin = "<!-- permission-matrix:begin -->\n";
        let end = "<!-- permission-matrix:end -->";
        if std::env::var_os("RIS_UPDATE_SCHEMAS").is_some() {
            if let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) {
                let updated = format!("{}{begin}{table}{}", &doc[..b], &doc[e..]);
                std::fs::write(path, updated).unwrap_or_default();
                return;
            }
        }
        assert!(
            doc.contains(&format!("{begin}{table}{end}")),
            "docs/security.md does not carry the permission matrix of the code \
             (regenerate: RIS_UPDATE_SCHEMAS=1 cargo test -p ris-api permissions)"
        );
    }
}
