//! The checked-in `schemas/openapi.json` must match the code, and the route table in
//! `api/src/openapi.rs` must list exactly the routes the route files register.
//!
//! Regenerate with `RIS_UPDATE_SCHEMAS=1 cargo test -p ris-api --test openapi`.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ris_api::openapi::{document, ROUTES};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

#[test]
fn checked_in_openapi_matches_the_code() {
    let path = workspace().join("schemas").join("openapi.json");
    let expected = serde_json::to_string_pretty(&document()).unwrap() + "\n";
    if std::env::var_os("RIS_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} drifted from the code (run with RIS_UPDATE_SCHEMAS=1 to regenerate)",
        path.display()
    );
}

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` in `source`.
fn routes_in(source: &str, prefix: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The argument list, up to the matching parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("unbalanced .route(");
        let args = &rest[..end];
        let path = args.split('"').nth(1).expect("route path literal");
        let handlers = &args[args.find(',').expect("route handler")..];
        for method in ["get", "post", "put", "delete", "patch"] {
            let needle = format!("{method}(");
            let mut h = handlers;
            while let Some(i) = h.find(&needle) {
                let before = h[..i].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    found.push((method.to_uppercase(), format!("{prefix}{path}")));
                }
                h = &h[i + needle.len()..];
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn route_table_lists_exactly_the_served_routes() {
    let src = workspace().join("api").join("src");
    let mut files = Vec::new();
    rust_files(&src.join("routes"), &mut files);
    files.push(src.join("openapi.rs"));
    let mut served = BTreeSet::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        if name == "mod.rs" && file.parent().unwrap().ends_with("routes") {
            continue; // merges the others
        }
        // `routes/mod.rs` nests every resource router under `/v1`, apart from the
        // health probes; `openapi.rs` spells its full path.
        let prefix = match name {
            "health.rs" | "openapi.rs" => "",
            _ => "/v1",
        };
        let source = std::fs::read_to_string(file).unwrap();
        served.extend(routes_in(&source, prefix));
    }
    let documented: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented.len(), ROUTES.len(), "a route is listed twice");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "route table out of step with api/src/routes: served but not documented \
         {undocumented:?}; documented but not served {unserved:?}"
    );
}

#[test]
fn the_extractor_sees_chained_and_multiline_routes() {
    let src = r#"
        Router::new()
            .route("/a", get(list).post(create))
            .route(
                "/a/{id}/x",
                post(redeliver),
            )
            .route("/b", delete(remove))
    "#;
    let expected: Vec<(String, String)> = [
        ("GET", "/v1/a"),
        ("POST", "/v1/a"),
        ("POST", "/v1/a/{id}/x"),
        ("DELETE", "/v1/b"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(routes_in(src, "/v1"), expected);
}
