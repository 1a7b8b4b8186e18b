//! The OpenAPI 3.1 description of the API, served at `GET /v1/openapi.json`.
//!
//! The document is built in code from one table, [`ROUTES`], that lists every route the
//! API serves; the body schemas come from the `ris-schemas` types through schemars (JSON
//! Schema 2020-12, the dialect of OpenAPI 3.1), with `$ref`s into
//! `#/components/schemas/`. A copy is checked in as `schemas/openapi.json`
//! (`api/tests/openapi.rs` fails when it drifts).

use std::collections::BTreeMap;

use axum::routing::get;
use axum::{Json, Router};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

use ris_schemas::api::{
    AgentView, ApiErrorBody, ApiKeyCreated, AttemptView, CreateApiKey, CreateEnrollmentToken,
    CreateTenant, EnrollRequest, EnrollResponse, EnrollmentTokenCreated, Page, TaskAccepted,
    TaskCancelled, TaskEventView, TaskView, TenantSettings, TenantView,
};
use ris_schemas::dead_letters::DeadLetterView;
use ris_schemas::hooks::{CreateInboundHook, InboundHookView};
use ris_schemas::integrations::{CreateIntegration, IntegrationCreated, IntegrationView};
use ris_schemas::job::{JobCancelled, JobRequest, JobTargetView, JobView};
use ris_schemas::security::{
    ApiKeyView, AuditEntryView, AuditVerifyReport, JwtKeyView, RotateSigningKey, SigningKeyView,
    TenantLimits,
};
use ris_schemas::service::{PutService, ScaleService, ServiceRevision, ServiceView};
use ris_schemas::task::TaskRequest;
use ris_schemas::users::{
    CreateUser, LoginRequest, RefreshRequest, TokenPair, TotpConfirm, TotpEnrollment, UserCreated,
    UserView,
};
use ris_schemas::webhooks::{CreateWebhook, DeliveryView, WebhookView};

use crate::state::AppState;
use ris_schemas::service::ServiceLogs;

/// `GET /v1/openapi.json`, without authentication.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(serve))
}

async fn serve() -> Json<Value> {
    Json(document())
}

/// HTTP methods the table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// A tenant's API key.
    Tenant,
    /// The platform admin key.
    Admin,
    /// The platform admin key, or a tenant's key (acting on its own tenant).
    AdminOrTenant,
    /// The agent's heartbeat token (from enrollment).
    Agent,
    /// No key: an HMAC of the body in the `RIS-Signature` header.
    Signature,
}

/// A schema from the generator (a `$ref` into `#/components/schemas/` for named types).
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a response carries.
#[derive(Clone, Copy)]
pub enum Body {
    /// No body (204).
    Empty,
    /// `application/json` of a schemars type.
    Json(SchemaFn),
    /// `application/json` with an inline schema (health probes).
    JsonInline(fn() -> Value),
    /// A text body of the given media type.
    Text(&'static str),
    /// `101 Switching Protocols` to a WebSocket.
    Upgrade,
}

/// A query parameter (path parameters come from the `{name}`s of the path).
#[derive(Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: fn() -> Value,
}

/// One operation.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: Method,
    /// The path as served, with `{name}` path parameters (axum 0.8 uses the same syntax).
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub auth: Auth,
    pub query: &'static [Param],
    /// Extra request headers (name, description), all optional strings of visible ASCII.
    pub headers: &'static [(&'static str, &'static str)],
    pub request: Option<SchemaFn>,
    /// Success statuses and their bodies.
    pub responses: &'static [(u16, Body)],
    /// Error statuses, each with an `ApiErrorBody` (415 and 503 are added where they
    /// apply).
    pub errors: &'static [u16],
}

const LIMIT: Param = Param {
    name: "limit",
    description: "Page size, 1 to 200 (default 50).",
    schema: || json!({ "type": "integer", "minimum": 1, "maximum": 200 }),
};
const CURSOR: Param = Param {
    name: "cursor",
    description: "`next_cursor` of the previous page.",
    schema: || json!({ "type": "string" }),
};
const TASK_STATE: Param = Param {
    name: "state",
    description: "Only tasks in this state.",
    schema: || json!({ "type": "string" }),
};
const AGENT_ID: Param = Param {
    name: "agent_id",
    description: "Only tasks placed on this agent.",
    schema: || json!({ "type": "string", "format": "uuid" }),
};
const TARGET_STATE: Param = Param {
    name: "state",
    description: "Only targets in this state (`pending`, `waiting`, a task state, `skipped_offline`, `skipped_halted`, `skipped_cancelled`).",
    schema: || json!({ "type": "string" }),
};
const TYPES: Param = Param {
    name: "types",
    description: "Comma-separated event type patterns (`task.*`, `agent.online`).",
    schema: || json!({ "type": "string" }),
};

const LOGS_AGENT_ID: Param = Param {
    name: "agent_id",
    description: "Only this agent's containers (default: every agent holding an instance).",
    schema: || json!({ "type": "string", "format": "uuid" }),
};
const TAIL: Param = Param {
    name: "tail",
    description: "Last lines per container, 1 to 10000 (default 100).",
    schema: || json!({ "type": "integer", "minimum": 1, "maximum": 10000 }),
};
const LOG_SINCE: Param = Param {
    name: "since",
    description: "Only lines since this time: unix seconds or RFC 3339.",
    schema: || json!({ "type": "string" }),
};

const FOLLOW: Param = Param {
    name: "follow",
    description:
        "`true`: stream live output until the task ends; `false` (default): the stored output.",
    schema: || json!({ "type": "boolean", "default": false }),
};

const TENANT: Param = Param {
    name: "tenant",
    description: "Platform admin only: the tenant to act on (a tenant key acts on its own).",
    schema: || json!({ "type": "string" }),
};
const AUDIT_ACTION: Param = Param {
    name: "action",
    description:
        "Only entries of this action (an operation id such as `submitTask`, or `auth.failed`).",
    schema: || json!({ "type": "string" }),
};
const AUDIT_ACTOR: Param = Param {
    name: "actor",
    description: "Only entries of this actor (`key:<id>`, `platform-admin`, `agent:<id>`, ...).",
    schema: || json!({ "type": "string" }),
};
const SINCE: Param = Param {
    name: "since",
    description: "Only entries at or after this RFC 3339 time.",
    schema: || json!({ "type": "string", "format": "date-time" }),
};
const UNTIL: Param = Param {
    name: "until",
    description: "Only entries before this RFC 3339 time.",
    schema: || json!({ "type": "string", "format": "date-time" }),
};

/// The tag of the probes and of this document.
const META: &str = "meta";

const COMMON: &[u16] = &[400, 401, 403];
const COMMON_404: &[u16] = &[400, 401, 403, 404];
const COMMON_409: &[u16] = &[400, 401, 403, 404, 409];

fn health_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "status": { "type": "string" } },
        "required": ["status"],
    })
}

fn ready_schema() -> Value {
    let check = json!({
        "type": "object",
        "properties": { "status": { "type": "string" }, "error": { "type": "string" } },
        "required": ["status"],
    });
    json!({
        "type": "object",
        "properties": {
            "status": { "type": "string", "enum": ["ready", "not_ready"] },
            "checks": {
                "type": "object",
                "properties": { "postgres": check, "redis": check, "rabbitmq": check },
            },
        },
        "required": ["status", "checks"],
    })
}

fn openapi_schema() -> Value {
    json!({ "type": "object" })
}

/// Every route the API serves.
pub const ROUTES: &[Route] = &[
    // tenants (platform admin)
    Route {
        method: Method::Post,
        path: "/v1/tenants",
        operation_id: "createTenant",
        summary: "Create a tenant (its vhost and topology); 200 when it already exists",
        tag: "tenants",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: Some(schema::<CreateTenant>),
        responses: &[
            (201, Body::Json(schema::<TenantView>)),
            (200, Body::Json(schema::<TenantView>)),
        ],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/tenants",
        operation_id: "listTenants",
        summary: "List tenants",
        tag: "tenants",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Vec<TenantView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/tenants/{name}",
        operation_id: "getTenant",
        summary: "Show a tenant",
        tag: "tenants",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<TenantView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Delete,
        path: "/v1/tenants/{name}",
        operation_id: "deleteTenant",
        summary: "Delete a tenant and its vhost",
        tag: "tenants",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_404,
    },
    // API keys (platform admin)
    Route {
        method: Method::Post,
        path: "/v1/api-keys",
        operation_id: "createApiKey",
        summary: "Create an API key for a tenant (the key is shown once)",
        tag: "api-keys",
        auth: Auth::AdminOrTenant,
        query: &[],
        headers: &[],
        request: Some(schema::<CreateApiKey>),
        responses: &[(201, Body::Json(schema::<ApiKeyCreated>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/api-keys",
        operation_id: "listApiKeys",
        summary: "List a tenant's API keys (never their secrets)",
        tag: "api-keys",
        auth: Auth::AdminOrTenant,
        query: &[TENANT],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Vec<ApiKeyView>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Delete,
        path: "/v1/api-keys/{id}",
        operation_id: "revokeApiKey",
        summary: "Revoke an API key (it gets 401 from now on)",
        tag: "api-keys",
        auth: Auth::AdminOrTenant,
        query: &[TENANT],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_404,
    },
    // tenant limits (platform admin)
    Route {
        method: Method::Get,
        path: "/v1/tenants/{name}/limits",
        operation_id: "getTenantLimits",
        summary: "Show a tenant's own rate limits and quotas (absent: the defaults)",
        tag: "tenants",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<TenantLimits>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Put,
        path: "/v1/tenants/{name}/limits",
        operation_id: "setTenantLimits",
        summary: "Set a tenant's rate limits and quotas",
        tag: "tenants",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: Some(schema::<TenantLimits>),
        responses: &[(200, Body::Json(schema::<TenantLimits>))],
        errors: COMMON_404,
    },
    // message signing keys (platform admin)
    Route {
        method: Method::Get,
        path: "/v1/signing-keys",
        operation_id: "listSigningKeys",
        summary: "List the keys agents accept on assignments and control messages",
        tag: "signing-keys",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Vec<SigningKeyView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Post,
        path: "/v1/signing-keys",
        operation_id: "addSigningKey",
        summary: "Rotate: publish a new signing key that activates later",
        tag: "signing-keys",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: Some(schema::<RotateSigningKey>),
        responses: &[(201, Body::Json(schema::<SigningKeyView>))],
        errors: COMMON,
    },
    Route {
        method: Method::Delete,
        path: "/v1/signing-keys/{kid}",
        operation_id: "retireSigningKey",
        summary: "Retire a signing key that no longer signs (agents stop accepting it)",
        tag: "signing-keys",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_409,
    },
    // users and logins
    Route {
        method: Method::Post,
        path: "/v1/users",
        operation_id: "createUser",
        summary: "Create a user (admin roles get TOTP, shown once)",
        tag: "users",
        auth: Auth::AdminOrTenant,
        query: &[],
        headers: &[],
        request: Some(schema::<CreateUser>),
        responses: &[(201, Body::Json(schema::<UserCreated>))],
        errors: COMMON_409,
    },
    Route {
        method: Method::Get,
        path: "/v1/users",
        operation_id: "listUsers",
        summary: "List a tenant's users (or the platform admins)",
        tag: "users",
        auth: Auth::AdminOrTenant,
        query: &[TENANT],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Vec<UserView>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/users/me/totp",
        operation_id: "beginTotp",
        summary: "Set up TOTP for oneself: a new secret (pending until confirmed)",
        tag: "users",
        auth: Auth::AdminOrTenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(201, Body::Json(schema::<TotpEnrollment>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/users/me/totp/confirm",
        operation_id: "confirmTotp",
        summary: "Turn TOTP on with a code from the new secret",
        tag: "users",
        auth: Auth::AdminOrTenant,
        query: &[],
        headers: &[],
        request: Some(schema::<TotpConfirm>),
        responses: &[(204, Body::Empty)],
        errors: COMMON_409,
    },
    Route {
        method: Method::Post,
        path: "/v1/auth/login",
        operation_id: "login",
        summary: "Log in with email, password and (admins) a TOTP code",
        tag: "auth",
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: Some(schema::<LoginRequest>),
        responses: &[(200, Body::Json(schema::<TokenPair>))],
        errors: COMMON,
    },
    Route {
        method: Method::Post,
        path: "/v1/auth/refresh",
        operation_id: "refreshToken",
        summary: "Swap a refresh token (once) for a new token pair",
        tag: "auth",
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: Some(schema::<RefreshRequest>),
        responses: &[(200, Body::Json(schema::<TokenPair>))],
        errors: COMMON,
    },
    Route {
        method: Method::Post,
        path: "/v1/auth/logout",
        operation_id: "logout",
        summary: "End the session: its refresh and access tokens stop working",
        tag: "auth",
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: Some(schema::<RefreshRequest>),
        responses: &[(204, Body::Empty)],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/auth/keys",
        operation_id: "listAccessTokenKeys",
        summary: "List the keys that sign access tokens (ids only)",
        tag: "auth",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Vec<JwtKeyView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Post,
        path: "/v1/auth/keys",
        operation_id: "addAccessTokenKey",
        summary: "Rotate: a new key signs access tokens from now on; older ones still verify",
        tag: "auth",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(201, Body::Json(schema::<JwtKeyView>))],
        errors: COMMON,
    },
    Route {
        method: Method::Delete,
        path: "/v1/auth/keys/{kid}",
        operation_id: "retireAccessTokenKey",
        summary: "Retire an access token key: tokens it signed stop working",
        tag: "auth",
        auth: Auth::Admin,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_409,
    },
    // audit log
    Route {
        method: Method::Get,
        path: "/v1/audit",
        operation_id: "listAudit",
        summary: "List audit entries, newest first",
        tag: "audit",
        auth: Auth::AdminOrTenant,
        query: &[
            TENANT,
            AUDIT_ACTION,
            AUDIT_ACTOR,
            SINCE,
            UNTIL,
            LIMIT,
            CURSOR,
        ],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<AuditEntryView>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/audit/verify",
        operation_id: "verifyAudit",
        summary: "Recompute the audit hash chain; report the first broken link",
        tag: "audit",
        auth: Auth::AdminOrTenant,
        query: &[TENANT],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<AuditVerifyReport>))],
        errors: COMMON_404,
    },
    // dead letters
    Route {
        method: Method::Get,
        path: "/v1/dead-letters",
        operation_id: "listDeadLetters",
        summary: "List dead-lettered messages, newest first",
        tag: "dead-letters",
        auth: Auth::Tenant,
        query: &[LIMIT, CURSOR],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<DeadLetterView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/dead-letters/{id}",
        operation_id: "getDeadLetter",
        summary: "Show a dead letter",
        tag: "dead-letters",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<DeadLetterView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Delete,
        path: "/v1/dead-letters/{id}",
        operation_id: "deleteDeadLetter",
        summary: "Discard a dead letter",
        tag: "dead-letters",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/dead-letters/{id}/replay",
        operation_id: "replayDeadLetter",
        summary: "Publish a dead letter again to its original exchange",
        tag: "dead-letters",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(202, Body::Json(schema::<DeadLetterView>))],
        errors: COMMON_409,
    },
    // enrollment
    Route {
        method: Method::Post,
        path: "/v1/agents/enrollment-tokens",
        operation_id: "createEnrollmentToken",
        summary: "Create a one-time enrollment token",
        tag: "agents",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<CreateEnrollmentToken>),
        responses: &[(201, Body::Json(schema::<EnrollmentTokenCreated>))],
        errors: COMMON,
    },
    Route {
        method: Method::Post,
        path: "/v1/agents/enroll",
        operation_id: "enrollAgent",
        summary: "Enroll an agent with an enrollment token (in the body)",
        tag: "agents",
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: Some(schema::<EnrollRequest>),
        responses: &[(201, Body::Json(schema::<EnrollResponse>))],
        errors: &[400, 401, 409],
    },
    // agents
    Route {
        method: Method::Get,
        path: "/v1/agents",
        operation_id: "listAgents",
        summary: "List agents with presence, load and addresses",
        tag: "agents",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<AgentView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/agents/{id}",
        operation_id: "getAgent",
        summary: "Show an agent",
        tag: "agents",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<AgentView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/agents/{id}/heartbeat",
        operation_id: "agentHeartbeat",
        summary: "Agent heartbeat: upgrade to a WebSocket (heartbeat frames and replies)",
        tag: "agents",
        auth: Auth::Agent,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(101, Body::Upgrade)],
        errors: &[400, 401],
    },
    // tasks
    Route {
        method: Method::Post,
        path: "/v1/tasks",
        operation_id: "submitTask",
        summary: "Submit a task",
        tag: "tasks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[(
            "Idempotency-Key",
            "A resubmission with the same key returns the first task.",
        )],
        request: Some(schema::<TaskRequest>),
        responses: &[(202, Body::Json(schema::<TaskAccepted>))],
        errors: COMMON_409,
    },
    Route {
        method: Method::Get,
        path: "/v1/tasks",
        operation_id: "listTasks",
        summary: "List tasks, newest first",
        tag: "tasks",
        auth: Auth::Tenant,
        query: &[TASK_STATE, AGENT_ID, LIMIT, CURSOR],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<TaskView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/tasks/{id}",
        operation_id: "getTask",
        summary: "Show a task: state, attempts, result",
        tag: "tasks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<TaskView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/tasks/{id}/output",
        operation_id: "streamTaskOutput",
        summary: "A task's output as Server-Sent Events (stored, or live with `follow=true`)",
        tag: "tasks",
        auth: Auth::Tenant,
        query: &[FOLLOW],
        headers: &[],
        request: None,
        responses: &[(200, Body::Text("text/event-stream"))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/tasks/{id}/events",
        operation_id: "listTaskEvents",
        summary: "A task's state transitions, oldest first",
        tag: "tasks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<TaskEventView>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/tasks/{id}/attempts",
        operation_id: "listTaskAttempts",
        summary: "A task's attempts",
        tag: "tasks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<AttemptView>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/tasks/{id}/cancel",
        operation_id: "cancelTask",
        summary: "Cancel a task: 200 when it never ran, 202 when its agent is told",
        tag: "tasks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[
            (200, Body::Json(schema::<TaskCancelled>)),
            (202, Body::Json(schema::<TaskCancelled>)),
        ],
        errors: COMMON_409,
    },
    // jobs
    Route {
        method: Method::Post,
        path: "/v1/jobs",
        operation_id: "createJob",
        summary: "Run a task on every agent of a selector or list, with rate control",
        tag: "jobs",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<JobRequest>),
        responses: &[(201, Body::Json(schema::<JobView>))],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/jobs",
        operation_id: "listJobs",
        summary: "List jobs, newest first",
        tag: "jobs",
        auth: Auth::Tenant,
        query: &[LIMIT, CURSOR],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<JobView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/jobs/{id}",
        operation_id: "getJob",
        summary: "Show a job: state, counts by target state, halt reason",
        tag: "jobs",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<JobView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/jobs/{id}/tasks",
        operation_id: "listJobTasks",
        summary: "A job's targets in order, with their child tasks",
        tag: "jobs",
        auth: Auth::Tenant,
        query: &[TARGET_STATE, LIMIT, CURSOR],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<JobTargetView>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/jobs/{id}/cancel",
        operation_id: "cancelJob",
        summary: "Cancel a job: skip what is not dispatched, stop its children",
        tag: "jobs",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(202, Body::Json(schema::<JobCancelled>))],
        errors: COMMON_409,
    },
    // services
    Route {
        method: Method::Get,
        path: "/v1/services",
        operation_id: "listServices",
        summary: "List services by name, with their agents counted by instance state",
        tag: "services",
        auth: Auth::Tenant,
        query: &[LIMIT, CURSOR],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<ServiceView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Put,
        path: "/v1/services/{name}",
        operation_id: "putService",
        summary:
            "Declare a service: 201 when created, 200 when updated (a new revision) or unchanged",
        tag: "services",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<PutService>),
        responses: &[
            (201, Body::Json(schema::<ServiceView>)),
            (200, Body::Json(schema::<ServiceView>)),
        ],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/services/{name}",
        operation_id: "getService",
        summary: "Show a service: desired against actual, per agent",
        tag: "services",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<ServiceView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Delete,
        path: "/v1/services/{name}",
        operation_id: "deleteService",
        summary: "Delete a service: its agents remove every container it owns",
        tag: "services",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(202, Body::Json(schema::<ServiceView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/services/{name}/revisions",
        operation_id: "listServiceRevisions",
        summary: "A service's revisions, newest first",
        tag: "services",
        auth: Auth::Tenant,
        query: &[LIMIT, CURSOR],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<ServiceRevision>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/services/{name}/scale",
        operation_id: "scaleService",
        summary: "Set the replicas per agent (a new revision)",
        tag: "services",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<ScaleService>),
        responses: &[(200, Body::Json(schema::<ServiceView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/services/{name}/restart",
        operation_id: "restartService",
        summary: "Replace every replica, one at a time (a new revision)",
        tag: "services",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<ServiceView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/services/{name}/logs",
        operation_id: "getServiceLogs",
        summary: "Container logs, fetched from the agents through the broker",
        tag: "services",
        auth: Auth::Tenant,
        query: &[LOGS_AGENT_ID, TAIL, LOG_SINCE],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<ServiceLogs>))],
        errors: &[400, 401, 403, 404, 504],
    },
    // webhooks
    Route {
        method: Method::Post,
        path: "/v1/webhooks",
        operation_id: "createWebhook",
        summary: "Register a webhook",
        tag: "webhooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<CreateWebhook>),
        responses: &[(201, Body::Json(schema::<WebhookView>))],
        errors: COMMON_409,
    },
    Route {
        method: Method::Get,
        path: "/v1/webhooks",
        operation_id: "listWebhooks",
        summary: "List webhooks",
        tag: "webhooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<WebhookView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Get,
        path: "/v1/webhooks/{id}",
        operation_id: "getWebhook",
        summary: "Show a webhook",
        tag: "webhooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<WebhookView>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Delete,
        path: "/v1/webhooks/{id}",
        operation_id: "deleteWebhook",
        summary: "Delete a webhook",
        tag: "webhooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_404,
    },
    Route {
        method: Method::Get,
        path: "/v1/webhooks/{id}/deliveries",
        operation_id: "listWebhookDeliveries",
        summary: "A webhook's deliveries, newest first",
        tag: "webhooks",
        auth: Auth::Tenant,
        query: &[LIMIT],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<DeliveryView>>))],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        operation_id: "redeliverWebhookDelivery",
        summary: "Deliver a delivery again",
        tag: "webhooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(202, Body::Json(schema::<DeliveryView>))],
        errors: COMMON_409,
    },
    // inbound hooks
    Route {
        method: Method::Post,
        path: "/v1/hooks",
        operation_id: "createInboundHook",
        summary: "Create an inbound hook: a task template a signed POST fills in",
        tag: "hooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<CreateInboundHook>),
        responses: &[(201, Body::Json(schema::<InboundHookView>))],
        errors: COMMON_409,
    },
    Route {
        method: Method::Get,
        path: "/v1/hooks",
        operation_id: "listInboundHooks",
        summary: "List inbound hooks",
        tag: "hooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<InboundHookView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Delete,
        path: "/v1/hooks/{id}",
        operation_id: "deleteInboundHook",
        summary: "Delete an inbound hook",
        tag: "hooks",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_404,
    },
    Route {
        method: Method::Post,
        path: "/v1/hooks/{id}",
        operation_id: "triggerInboundHook",
        summary: "Trigger an inbound hook: the body's fields fill the template (no key)",
        tag: "hooks",
        auth: Auth::Signature,
        query: &[],
        headers: &[(
            "RIS-Signature",
            "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`",
        )],
        request: Some(schema::<Map<String, Value>>),
        responses: &[(202, Body::Json(schema::<TaskAccepted>))],
        errors: &[400, 401, 404, 409],
    },
    // settings
    Route {
        method: Method::Get,
        path: "/v1/settings",
        operation_id: "getSettings",
        summary: "The tenant's settings",
        tag: "settings",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<TenantSettings>))],
        errors: COMMON,
    },
    Route {
        method: Method::Put,
        path: "/v1/settings",
        operation_id: "putSettings",
        summary: "Replace the tenant's settings",
        tag: "settings",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<TenantSettings>),
        responses: &[(200, Body::Json(schema::<TenantSettings>))],
        errors: COMMON,
    },
    // integrations
    Route {
        method: Method::Post,
        path: "/v1/integrations",
        operation_id: "createIntegration",
        summary: "Create an integration (AMQP credentials are shown once)",
        tag: "integrations",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: Some(schema::<CreateIntegration>),
        responses: &[(201, Body::Json(schema::<IntegrationCreated>))],
        errors: COMMON_409,
    },
    Route {
        method: Method::Get,
        path: "/v1/integrations",
        operation_id: "listIntegrations",
        summary: "List integrations",
        tag: "integrations",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Json(schema::<Page<IntegrationView>>))],
        errors: COMMON,
    },
    Route {
        method: Method::Delete,
        path: "/v1/integrations/{name}",
        operation_id: "deleteIntegration",
        summary: "Delete an integration and its broker user",
        tag: "integrations",
        auth: Auth::Tenant,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(204, Body::Empty)],
        errors: COMMON_404,
    },
    // events
    Route {
        method: Method::Get,
        path: "/v1/events/stream",
        operation_id: "streamEvents",
        summary: "The tenant's events as Server-Sent Events",
        tag: "events",
        auth: Auth::Tenant,
        query: &[TYPES],
        headers: &[],
        request: None,
        responses: &[(200, Body::Text("text/event-stream"))],
        errors: COMMON,
    },
    // this document
    Route {
        method: Method::Get,
        path: "/v1/openapi.json",
        operation_id: "getOpenApi",
        summary: "This OpenAPI 3.1 document",
        tag: META,
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::JsonInline(openapi_schema))],
        errors: &[],
    },
    // health
    Route {
        method: Method::Get,
        path: "/healthz",
        operation_id: "healthz",
        summary: "Liveness",
        tag: META,
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::JsonInline(health_schema))],
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/readyz",
        operation_id: "readyz",
        summary: "Readiness: PostgreSQL, Redis and RabbitMQ reachable (503 when not)",
        tag: META,
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: None,
        responses: &[
            (200, Body::JsonInline(ready_schema)),
            (503, Body::JsonInline(ready_schema)),
        ],
        errors: &[],
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        operation_id: "metrics",
        summary: "Prometheus metrics",
        tag: META,
        auth: Auth::None,
        query: &[],
        headers: &[],
        request: None,
        responses: &[(200, Body::Text("text/plain"))],
        errors: &[],
    },
];

/// The `{name}`s of a path, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Invalid request (`field` names the offending input)",
        401 => "Missing or invalid credentials",
        403 => "Credentials not allowed here",
        404 => "Not found",
        409 => "Conflict with the current state",
        413 => "The body is larger than the API accepts",
        415 => "The body is not JSON (`Content-Type: application/json`)",
        429 => "A rate limit or quota is exhausted (`field` names it; see `Retry-After`)",
        503 => "A dependency (PostgreSQL, Redis, RabbitMQ) is unavailable; retry later",
        504 => "The agents did not answer in time",
        _ => "Response",
    }
}

fn to_value(schema: Schema) -> Value {
    schema.to_value()
}

fn operation(route: &Route, generator: &mut SchemaGenerator) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.operation_id));
    op.insert("summary".into(), json!(route.summary));
    op.insert("tags".into(), json!([route.tag]));
    let mut parameters = Vec::new();
    for name in path_params(route.path) {
        // `{name}` is a tenant or integration name; every `{id}` and `{delivery_id}` is a
        // UUID (handlers answer 400 `invalid_field` to anything else).
        let schema = if name == "name" || name == "kid" {
            json!({ "type": "string" })
        } else {
            json!({ "type": "string", "format": "uuid" })
        };
        parameters.push(json!({ "name": name, "in": "path", "required": true, "schema": schema }));
    }
    for q in route.query {
        parameters.push(json!({
            "name": q.name, "in": "query", "required": false,
            "description": q.description, "schema": (q.schema)(),
        }));
    }
    for (name, description) in route.headers {
        parameters.push(json!({
            "name": name, "in": "header", "required": false,
            "description": description,
            "schema": { "type": "string", "pattern": "^[!-~]{1,255}$" },
        }));
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    match route.auth {
        Auth::None | Auth::Signature => {
            op.insert("security".into(), json!([]));
        }
        Auth::Tenant | Auth::Admin | Auth::AdminOrTenant | Auth::Agent => {
            op.insert("security".into(), json!([{ "bearer": [] }]));
        }
    }
    if let Some(request) = route.request {
        op.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": { "application/json": { "schema": to_value(request(generator)) } },
            }),
        );
    }
    let mut responses = Map::new();
    for (status, body) in route.responses {
        let content = match body {
            Body::Empty | Body::Upgrade => None,
            Body::Json(f) => {
                Some(json!({ "application/json": { "schema": to_value(f(generator)) } }))
            }
            Body::JsonInline(f) => Some(json!({ "application/json": { "schema": f() } })),
            Body::Text(media) => Some(json!({ *media: { "schema": { "type": "string" } } })),
        };
        let mut response = Map::new();
        response.insert("description".into(), json!(reason(*status)));
        if let Some(content) = content {
            response.insert("content".into(), content);
        }
        responses.insert(status.to_string(), Value::Object(response));
    }
    let error = to_value(generator.subschema_for::<ApiErrorBody>());
    let mut errors = route.errors.to_vec();
    // `ValidJson` refuses a body whose Content-Type is not JSON.
    if route.request.is_some() && route.auth != Auth::Signature {
        errors.push(415);
    }
    // Routes that need a permission are rate limited (`docs/security.md`).
    if let Some(crate::permissions::Access::Needs(p)) =
        crate::permissions::access_of(route.method.as_str(), route.path)
    {
        op.insert("x-ris-permission".into(), json!(p.name()));
        errors.push(429);
    }
    // Every route but the probes and this document reaches PostgreSQL, Redis or RabbitMQ.
    if route.tag != META {
        errors.push(503);
    }
    for status in &errors {
        responses.insert(
            status.to_string(),
            json!({
                "description": reason(*status),
                "content": { "application/json": { "schema": error } },
            }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    let description = match route.auth {
        Auth::None => None,
        Auth::Tenant => Some("Authenticated with a tenant's API key."),
        Auth::Admin => Some("Authenticated with the platform admin key."),
        Auth::AdminOrTenant => {
            Some("Authenticated with the platform admin key, or a tenant's key for its own tenant.")
        }
        Auth::Agent => Some("Authenticated with the agent's heartbeat token."),
        Auth::Signature => Some("Signed with the hook's secret in `RIS-Signature`; no key."),
    };
    if let Some(d) = description {
        op.insert("description".into(), json!(d));
    }
    Value::Object(op)
}

/// The whole OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for route in ROUTES {
        let op = operation(route, &mut generator);
        paths
            .entry(route.path)
            .or_default()
            .insert(route.method.key().into(), op);
    }
    let mut schemas = generator.take_definitions(true);
    let mut paths = serde_json::to_value(paths).expect("paths serialize");
    name_pages(&mut schemas, &mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "RIS",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Remote Integrated Services: a multi-tenant control plane that runs tasks on machines behind NAT.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "tags": tags(),
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
            },
            "schemas": schemas,
        },
    })
}

/// schemars names the instances of the generic `Page<T>` `Page`, `Page2`, ...; this
/// renames each `<Item>Page` after the `$ref` of its items, here and in every `$ref`.
fn name_pages(schemas: &mut Map<String, Value>, paths: &mut Value) {
    let mut renames = Vec::new();
    for (name, schema) in schemas.iter() {
        let is_page = name
            .strip_prefix("Page")
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
        let item = schema["properties"]["items"]["items"]["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix(REF_PREFIX));
        if let (true, Some(item)) = (is_page, item) {
            renames.push((name.clone(), format!("{item}Page")));
        }
    }
    for (from, to) in &renames {
        if let Some(schema) = schemas.remove(from) {
            schemas.insert(to.clone(), schema);
        }
    }
    let renames: BTreeMap<String, String> = renames
        .into_iter()
        .map(|(from, to)| (format!("{REF_PREFIX}{from}"), format!("{REF_PREFIX}{to}")))
        .collect();
    for schema in schemas.values_mut() {
        rewrite_refs(schema, &renames);
    }
    rewrite_refs(paths, &renames);
    schemas.sort_keys();
}

const REF_PREFIX: &str = "#/components/schemas/";

fn rewrite_refs(value: &mut Value, renames: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if key == "$ref" => {
                        if let Some(to) = renames.get(s.as_str()) {
                            *s = to.clone();
                        }
                    }
                    _ => rewrite_refs(v, renames),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, renames)),
        _ => {}
    }
}

fn tags() -> Value {
    let mut seen: Vec<&str> = Vec::new();
    for route in ROUTES {
        if !seen.contains(&route.tag) {
            seen.push(route.tag);
        }
    }
    Value::Array(seen.into_iter().map(|t| json!({ "name": t })).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = piece.split('"').next().unwrap();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("ref outside components: {target}"));
            assert!(schemas.contains_key(name), "dangling ref {target}");
        }
        for name in schemas.keys() {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "component name not allowed by OpenAPI: {name}"
            );
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut ids: Vec<_> = ROUTES.iter().map(|r| r.operation_id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len());
    }
}
