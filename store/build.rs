//! `sqlx::migrate!()` embeds `migrations/` at compile time; without this, adding a
//! migration (and changing no Rust file) would leave a cached build embedding the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
