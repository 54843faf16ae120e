// The migrations are embedded by `sqlx::migrate!`: rebuild when one is
// added or changed (sqlx's own advice), not only when Rust code changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
