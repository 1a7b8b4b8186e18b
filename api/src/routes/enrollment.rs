//! Enrollment: `POST /v1/agents/enrollment-tokens` (tenant) hands out a one-time,
//! expiring token; `POST /v1/agents/enroll` (the token is the credential) trades it for
//! the agent's identity: its id, a broker user that may read only its own queues and
//! write only results, and a heartbeat token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{Duration, Utc};
use ris_broker::names;
use ris_schemas::api::{
    AmqpCredentials, CreateEnrollmentToken, EnrollRequest, EnrollResponse, EnrollmentTokenCreated,
};
use ris_schemas::ids::AgentId;
use ris_store::{NewAgent, RedeemError};

use crate::audit::AuditNote;
use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::secrets;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents/enrollment-tokens", post(create_token))
        .route("/agents/enroll", post(enroll))
}

const MAX_TOKEN_TTL_SECS: u32 = 7 * 24 * 3600;
const MAX_CAPACITY: u32 = 1024;

async fn create_token(
    State(state): State<AppState>,
    caller: TenantCaller,
    ValidJson(body): ValidJson<CreateEnrollmentToken>,
) -> ApiResult<(StatusCode, Json<EnrollmentTokenCreated>)> {
    if body.ttl_secs == 0 || body.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(ApiError::invalid(
            "ttl_secs",
            format!("`ttl_secs` must be between 1 and {MAX_TOKEN_TTL_SECS}"),
        ));
    }
    let token = secrets::new_enrollment_token();
    let expires_at = Utc::now() + Duration::seconds(i64::from(body.ttl_secs));
    state
        .store
        .insert_enrollment_token(&caller.tenant, &secrets::sha256(&token), expires_at)
        .await?;
    tracing::info!(tenant = %caller.tenant.name, %expires_at, "enrollment token created");
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenCreated { token, expires_at }),
    ))
}

fn check_enroll_request(req: &EnrollRequest) -> ApiResult<()> {
    if req.capacity == 0 || req.capacity > MAX_CAPACITY {
        return Err(ApiError::invalid(
            "capacity",
            format!("`capacity` must be between 1 and {MAX_CAPACITY}"),
        ));
    }
    if req.version.len() > 64 {
        return Err(ApiError::invalid(
            "version",
            "`version` is at most 64 characters",
        ));
    }
    if req.hostname.len() > 255 {
        return Err(ApiError::invalid(
            "hostname",
            "`hostname` is at most 255 characters",
        ));
    }
    Ok(())
}

fn refused(err: RedeemError) -> ApiError {
    let unauthorized = |code, message: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message).with_field("token")
    };
    match err {
        RedeemError::NotFound => {
            unauthorized("enrollment_token_invalid", "enrollment token is not valid")
        }
        RedeemError::AlreadyUsed => {
            unauthorized("enrollment_token_used", "enrollment token already used")
        }
        RedeemError::Expired => {
            unauthorized("enrollment_token_expired", "enrollment token has expired")
        }
        RedeemError::NameTaken => ApiError::conflict(
            "agent_name_taken",
            "an agent with this name is already enrolled in the tenant",
        )
        .with_field("name"),
        RedeemError::QuotaExceeded { max } => crate::limits::quota_exceeded("max_agents", max),
        RedeemError::Store(e) => e.into(),
    }
}

#[tracing::instrument(skip_all, fields(tenant, agent_id, agent = %req.name))]
async fn enroll(
    State(state): State<AppState>,
    ValidJson(req): ValidJson<EnrollRequest>,
) -> ApiResult<Response> {
    check_enroll_request(&req)?;
    let agent_id = AgentId::new();
    let heartbeat_token = secrets::new_heartbeat_token();
    let broker_password = secrets::random_secret();
    let new_agent = NewAgent {
        id: agent_id,
        name: req.name.clone(),
        labels: req.labels.clone(),
        capacity: req.capacity,
        version: req.version.clone(),
        hostname: req.hostname.clone(),
        heartbeat_token_hash: secrets::sha256(&heartbeat_token),
    };
    let (tenant, agent) = state
        .store
        .enroll_agent_within(
            &secrets::sha256(&req.token),
            new_agent,
            state.config.limits.max_agents,
        )
        .await
        .map_err(refused)?;
    let span = tracing::Span::current();
    span.record("tenant", tenant.name.as_str());
    span.record("agent_id", tracing::field::display(agent_id));

    // The token is spent; if the broker is down now, the operator issues a new one.
    let publisher = state.brokers.publisher(&tenant.name).await?;
    ris_broker::provision_agent(
        &state.management,
        publisher.channel(),
        &tenant.name,
        agent_id,
        &broker_password,
    )
    .await?;
    tracing::info!("agent enrolled");
    let broker = &state.config.broker;
    let signing_keys = crate::signing::public_keys(&state).await?;
    let note = AuditNote {
        tenant: Some(tenant.ctx()),
        actor: Some(format!("agent:{agent_id}")),
        target: Some(format!("agent:{agent_id}")),
    };
    let created = (
        StatusCode::CREATED,
        Json(EnrollResponse {
            agent_id,
            name: agent.name,
            amqp: AmqpCredentials {
                url: broker
                    .public_amqp_url
                    .clone()
                    .unwrap_or_else(|| broker.amqp_url.clone()),
                vhost: tenant.name.vhost(),
                username: names::agent_user(&tenant.name, agent_id),
                password: broker_password,
                queue: names::agent_queue(agent_id),
                control_queue: names::agent_control_queue(agent_id),
                results_exchange: names::RESULTS_EXCHANGE.to_owned(),
            },
            tenant: tenant.name,
            heartbeat_token,
            heartbeat_interval_secs: state.config.heartbeat_interval_secs,
            signing_keys,
        }),
    );
    Ok(note.attach(created.into_response()))
}
