//! Static glibc builds (`-C target-feature=+crt-static`, the shipped binary) are linked with
//! packed relative relocations (DT_RELR, glibc ≥ 2.36, GNU ld ≥ 2.38): a static-pie binary
//! otherwise carries ~190 KB of 24-byte R_X86_64_RELATIVE entries. Other builds are unchanged.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
