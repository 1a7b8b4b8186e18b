//! The checked-in JSON Schema files under `schemas/json/` must match the code.
//!
//! Regenerate with `RIS_UPDATE_SCHEMAS=1 cargo test -p ris-schemas --test json_schema`.

use std::path::PathBuf;

#[test]
fn checked_in_json_schemas_match_the_code() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var_os("RIS_UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (stem, schema) in ris_schemas::json_schemas() {
        let path = dir.join(format!("{stem}.json"));
        let expected = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &expected).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(actual) if actual == expected => {}
            _ => drifted.push(path.display().to_string()),
        }
    }
    assert!(
        drifted.is_empty(),
        "JSON Schema files drifted from the code (run with RIS_UPDATE_SCHEMAS=1 to regenerate): {drifted:?}"
    );
}
