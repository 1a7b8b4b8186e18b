//! Users: password + TOTP logins, access JWTs that refuse tampering, refresh and logout.

#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use ris_tests::{System, TenantClient};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

fn base32_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

fn totp(secret_b32: &str, offset_steps: i64) -> String {
    let secret = base32_decode(secret_b32);
    let step = chrono::Utc::now().timestamp() / 30 + offset_steps;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&secret).unwrap();
    mac.update(&step.to_be_bytes());
    let d = mac.finalize().into_bytes();
    let o = usize::from(d[19] & 0x0f);
    let n = (u32::from(d[o] & 0x7f) << 24)
        | (u32::from(d[o + 1]) << 16)
        | (u32::from(d[o + 2]) << 8)
        | u32::from(d[o + 3]);
    format!("{:06}", n % 1_000_000)
}

async fn post(system: &System, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", system.api_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create_user(system: &System, t: &TenantClient, role: &str) -> (String, Value) {
    let email = format!("{role}-{}@example.com", ris_tests::unique(""));
    let (status, body) = t
        .request(
            Method::POST,
            "/v1/users",
            Some(json!({ "email": email, "password": "correct horse battery", "role": role })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let _ = system;
    (email, body)
}

#[tokio::test]
async fn admin_login_needs_totp_and_tokens_work_until_logout() {
    let system = System::start().await;
    let t = system.tenant().await;
    let (email, created) = create_user(&system, &t, "tenant-admin").await;
    let secret = created["totp"]["secret"].as_str().unwrap().to_owned();
    assert!(created["totp"]["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/RIS:"));

    // Without the code, or with a wrong one: refused.
    let login = json!({ "email": email, "password": "correct horse battery" });
    let (status, body) = post(&system, "/v1/auth/login", login.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "totp_required");
    let mut wrong = login.clone();
    wrong["totp"] = json!("000000");
    let (status, _) = post(&system, "/v1/auth/login", wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut bad_password = login.clone();
    bad_password["password"] = json!("incorrect horse battery");
    bad_password["totp"] = json!(totp(&secret, 0));
    let (status, _) = post(&system, "/v1/auth/login", bad_password).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let mut good = login.clone();
    good["totp"] = json!(totp(&secret, 1));
    let (status, tokens) = post(&system, "/v1/auth/login", good.clone()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    // The same code does not work twice.
    let (status, _) = post(&system, "/v1/auth/login", good).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let access = tokens["access_token"].as_str().unwrap();
    let me = t.with_key(access);
    me.get("/v1/tasks").await;
    me.get("/v1/users").await;

    // Refresh rotates: the old refresh token is spent.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, next) = post(
        &system,
        "/v1/auth/refresh",
        json!({ "refresh_token": refresh }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let (status, _) = post(
        &system,
        "/v1/auth/refresh",
        json!({ "refresh_token": refresh }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Logout ends the session: its access tokens stop working at once.
    let next_refresh = next["refresh_token"].as_str().unwrap();
    let (status, _) = post(
        &system,
        "/v1/auth/logout",
        json!({ "refresh_token": next_refresh }),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = me.request(Method::GET, "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Failed logins are in the tenant's audit log.
    let audit = t.get("/v1/audit?action=login").await;
    let outcomes: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"denied") && outcomes.contains(&"success"),
        "{audit}"
    );
}

#[tokio::test]
async fn tampered_forged_and_expired_jwts_get_401() {
    let system = System::start().await;
    let t = system.tenant().await;
    let (email, _) = create_user(&system, &t, "viewer").await;
    let (status, tokens) = post(
        &system,
        "/v1/auth/login",
        json!({ "email": email, "password": "correct horse battery" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    t.with_key(&token).get("/v1/tasks").await;
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let sign = |secret: &[u8], h: &Value, c: &Value| {
        let input = format!("{}.{}", enc(h), enc(c));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };

    // A viewer promoting itself: the changed claim breaks the signature.
    claims["role"] = json!("tenant-admin");
    let changed = format!("{}.{}.{}", parts[0], enc(&claims), parts[2]);
    // alg none.
    let none_header = json!({ "alg": "none", "typ": "JWT", "kid": header["kid"] });
    let alg_none = format!("{}.{}.", enc(&none_header), enc(&claims));
    // Signed with a key that is not the platform's, under its kid.
    let wrong_key = sign(b"not the platform's key at all!!!", &header, &claims);
    // Signed with the real key (read as a database superuser) but expired.
    let mut db = PgConnection::connect(&format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        system.database
    ))
    .await
    .unwrap();
    let (secret,): (Vec<u8>,) = sqlx::query_as("SELECT secret FROM jwt_keys WHERE kid = $1")
        .bind(header["kid"].as_str().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap();
    let mut old = claims.clone();
    old["role"] = json!("viewer");
    old["exp"] = json!(chrono::Utc::now().timestamp() - 10);
    let expired = sign(&secret, &header, &old);
    // The same key and fresh claims are accepted (the forgeries above fail for their flaw).
    old["exp"] = json!(chrono::Utc::now().timestamp() + 60);
    t.with_key(&sign(&secret, &header, &old))
        .get("/v1/tasks")
        .await;

    for (what, forged) in [
        ("changed claim", changed),
        ("alg none", alg_none),
        ("wrong key", wrong_key),
        ("expired", expired),
    ] {
        let (status, body) = t
            .with_key(&forged)
            .request(Method::GET, "/v1/tasks", None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }
}

#[tokio::test]
async fn operator_user_cannot_manage_users_or_keys() {
    let system = System::start().await;
    let t = system.tenant().await;
    let (email, created) = create_user(&system, &t, "operator").await;
    assert!(created.get("totp").is_none(), "{created}");
    let (_, tokens) = post(
        &system,
        "/v1/auth/login",
        json!({ "email": email, "password": "correct horse battery" }),
    )
    .await;
    let operator = t.with_key(tokens["access_token"].as_str().unwrap());
    operator
        .submit(json!({
            "target": { "selector": "nobody=here" },
            "task": { "kind": "shell", "argv": ["true"] },
        }))
        .await;
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/users",
            Some(
                json!({ "email": "x@example.com", "password": "correct horse battery", "role": "viewer" }),
            ),
        ),
        (Method::GET, "/v1/users", None),
        (
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "name": "mine" })),
        ),
    ] {
        let (status, resp) = operator.request(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {resp}");
    }
    // A tenant admin cannot create a platform admin.
    let (status, _) = t
        .request(
            Method::POST,
            "/v1/users",
            Some(json!({ "email": "boss@example.com", "password": "correct horse battery", "role": "platform-admin" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn password_guessing_is_rate_limited_per_email() {
    let system = System::start().await;
    let t = system.tenant().await;
    let (email, _) = create_user(&system, &t, "viewer").await;
    let guess = json!({ "email": email, "password": "not the password at all" });
    let mut refused = None;
    for _ in 0..15 {
        let (status, body) = post(&system, "/v1/auth/login", guess.clone()).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(body);
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let body = refused.expect("no 429 within 15 guesses");
    assert_eq!(body["field"], "login_attempts_per_minute", "{body}");
    // Even the right password waits now.
    let (status, _) = post(
        &system,
        "/v1/auth/login",
        json!({ "email": email, "password": "correct horse battery" }),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn access_token_keys_rotate_without_logging_anyone_out() {
    let system = System::start().await;
    let t = system.tenant().await;
    let (email, _) = create_user(&system, &t, "viewer").await;
    let login = json!({ "email": email, "password": "correct horse battery" });
    let kid_of = |token: &str| -> String {
        let header = token.split('.').next().unwrap();
        let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        v["kid"].as_str().unwrap().to_owned()
    };
    let (_, first) = post(&system, "/v1/auth/login", login.clone()).await;
    let first = first["access_token"].as_str().unwrap().to_owned();
    let old_kid = kid_of(&first);

    let (status, added) = system.admin(Method::POST, "/v1/auth/keys", None).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let new_kid = added["kid"].as_str().unwrap().to_owned();
    // Tokens of the old key still work; new ones carry the new kid.
    t.with_key(&first).get("/v1/tasks").await;
    let (_, second) = post(&system, "/v1/auth/login", login).await;
    let second = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(&second), new_kid);

    // The signing key cannot be retired; the old one can, and its tokens stop working.
    let (status, _) = system
        .admin(Method::DELETE, &format!("/v1/auth/keys/{new_kid}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = system
        .admin(Method::DELETE, &format!("/v1/auth/keys/{old_kid}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = t
        .with_key(&first)
        .request(Method::GET, "/v1/tasks", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    t.with_key(&second).get("/v1/tasks").await;
}
