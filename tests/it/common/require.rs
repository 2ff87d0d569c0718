//! What a test does when something it needs is missing from this machine (the real
//! CLI, promtool, an example client's runtime): print a SKIPPED line on a
//! developer's machine, but fail under `CCRELAY_REQUIRE_ALL=1`, which `.ci/run`
//! sets, so that a missing install can never turn a test into a silent pass.

/// True when every test must run (`CCRELAY_REQUIRE_ALL=1`).
pub fn all_required() -> bool {
    std::env::var("CCRELAY_REQUIRE_ALL").as_deref() == Ok("1")
}

/// Report `what` as missing: a panic under `CCRELAY_REQUIRE_ALL=1`, else the
/// SKIPPED line (with how to get it).
pub fn missing(what: &str, how_to_get_it: &str) {
    if all_required() {
        panic!("CCRELAY_REQUIRE_ALL=1 but {what} is missing: {how_to_get_it}");
    }
    eprintln!("SKIPPED: {what} missing ({how_to_get_it})");
    println!("SKIPPED: {what} missing ({how_to_get_it})");
}
