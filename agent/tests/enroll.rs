//! `ris-agent enroll` against a fake API.
#![allow(clippy::unwrap_used)] // Tests may unwrap (clippy.toml only covers #[test] fns).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ris_agent::enroll::{enroll, EnrollError, EnrollOptions};
use ris_agent::identity::IdentityError;
use ris_agent::Identity;
use ris_schemas::api::{ApiErrorBody, EnrollRequest};
use ris_schemas::ids::AgentName;

/// Accepts the token once; afterwards answers 409 like the real API.
fn api(used: Arc<AtomicBool>) -> Router {
    Router::new().route(
        "/v1/agents/enroll",
        post(move |Json(req): Json<EnrollRequest>| async move {
            if req.token != "good" || used.swap(true, Ordering::SeqCst) {
                let body = ApiErrorBody {
                    code: "enrollment_token_used".into(),
                    message: "enrollment token already used".into(),
                    field: None,
                };
                return Err((StatusCode::CONFLICT, Json(body)));
            }
            assert_eq!(req.version, env!("CARGO_PKG_VERSION"));
            assert!(!req.hostname.is_empty());
            let mut response = common::enroll_response();
            response.name = req.name;
            Ok(Json(response))
        }),
    )
}

fn options(api_url: &str, state_dir: &std::path::Path, force: bool) -> EnrollOptions {
    EnrollOptions {
        api_url: format!("{api_url}/"),
        token: "good".into(),
        name: AgentName::parse("web-1").unwrap(),
        labels: common::labels(&[("env", "prod"), ("region", "eu")]),
        capacity: 3,
        state_dir: state_dir.to_path_buf(),
        force,
        ca: None,
        client_cert: None,
    }
}

#[tokio::test]
async fn enroll_saves_the_identity_and_a_reused_token_is_refused() {
    let base = common::serve(api(Arc::new(AtomicBool::new(false)))).await;
    let tmp = common::TempDir::new();
    let state = tmp.path().join("state");

    let (identity, path) = enroll(options(&base, &state, false)).await.unwrap();
    assert_eq!(path, Identity::path(&state));
    assert_eq!(identity.api_url, base, "trailing slash trimmed");
    assert_eq!(identity.capacity, 3);
    assert_eq!(identity.labels.get("region"), Some("eu"));
    assert_eq!(Identity::load(&state).unwrap(), identity);

    // Without --force the existing identity is kept and the API is not even asked.
    let err = enroll(options(&base, &state, false)).await.unwrap_err();
    assert!(
        matches!(
            err,
            EnrollError::Identity(IdentityError::AlreadyEnrolled(_))
        ),
        "{err}"
    );

    let err = enroll(options(&base, &state, true)).await.unwrap_err();
    assert!(
        matches!(err, EnrollError::Refused { status: 409, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "enrollment refused: enrollment token already used"
    );
    assert_eq!(
        Identity::load(&state).unwrap(),
        identity,
        "identity untouched"
    );
}

#[tokio::test]
async fn unreachable_api_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let tmp = common::TempDir::new();
    let err = enroll(options(&format!("http://{addr}"), tmp.path(), false))
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::Transport { .. }), "{err:?}");
}
