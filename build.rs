//! Links the `vigil` binary with its relative relocations packed (`DT_RELR`) where the linker
//! and C library can.
//!
//! A position-independent executable carries one 24-byte relocation per pointer in its
//! read-only data (vtables, string tables): 315,000 of them, 7.2 MiB, which the dynamic loader
//! reads whole at every start and which then stay resident beside the program's code. Packed,
//! they are a bitmap of a few KiB, and the executable keeps its address randomisation (a
//! position-dependent build would drop the table too, and with it ASLR). GNU ld 2.38+, lld 15+ and glibc 2.36+
//! know the format; where the linker does not take the option, the binary links as before.

use std::path::PathBuf;
use std::process::Command;

const PACK_RELATIVE_RELOCATIONS: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
        && links_with(PACK_RELATIVE_RELOCATIONS)
    {
        println!("cargo:rustc-link-arg-bins={PACK_RELATIVE_RELOCATIONS}");
        // The end-to-end tests check the binary for what was asked of its link.
        println!("cargo:rustc-env=VIGIL_PACKED_RELOCATIONS=1");
    }
}

/// Whether the linker rustc calls (`cc` unless one is configured) links a small
/// position-independent program with `flag` and says nothing (an older GNU ld links anyway,
/// warning that it ignores an unknown `-z` option).
fn links_with(flag: &str) -> bool {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else { return false };
    let source = out.join("relr_probe.c");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let probe =
        Command::new(linker).args(["-fPIE", "-pie", flag, "-o"]).arg(out.join("relr_probe")).arg(&source).output();
    probe.is_ok_and(|out| out.status.success() && out.stderr.is_empty())
}
