//! The shell the builder's containers run: fitting the builder to the
//! target, the target volume's lock, and the build phase's script. Text
//! only; `super::docker` runs it.

use super::docker::{OUT_DIR, TARGET_DIR};
use super::plan::Plan;

/// The build phase's script: fit the target, take the volume's lock (and
/// run `under_lock`, e.g. a restore), build, copy the binary, toolchain,
/// crate metadata and CA bundle to the out dir.
pub fn build(plan: &Plan, umask: &str, under_lock: &str, restored: bool) -> String {
    format!(
        "set -e\numask {umask}\n{}{}cargo {} $KILN_BUILD_STD\nmkdir -p {OUT_DIR}\ncp {TARGET_DIR}/{}/{}/{} {OUT_DIR}/binary\n\
         rustc -V > {OUT_DIR}/toolchain\n\
         cargo {} > {OUT_DIR}/metadata.json || {{ echo 'kiln: cargo metadata failed: the SBOM will list no crates' >&2; rm -f {OUT_DIR}/metadata.json; }}\n\
         if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt {OUT_DIR}/ca.crt; fi\n{}",
        target_setup(&plan.target),
        exclusive_sources(&plan.src_dir(), under_lock),
        plan.build_args().join(" "),
        plan.target,
        plan.profile_dir(),
        plan.bin,
        plan.metadata_args().join(" "),
        if restored {
            super::deps::report_restored()
        } else {
            String::new()
        },
    )
}

/// Shell lines that fit the builder to the target before cargo runs (in
/// both phases, so the fetch brings what the build needs): a target whose
/// std the toolchain lacks is built from rust-src with `-Zbuild-std`
/// (RUSTC_BOOTSTRAP inside the builder only; its dependencies are fetched
/// like any crate); an aarch64 target on another machine links with the
/// cross gcc; a musl std built here links with musl-gcc, statically,
/// against the builder's /usr/local/lib/kiln-musl/libunwind.a. Sets
/// KILN_BUILD_STD for cargo's command line.
pub fn target_setup(target: &str) -> String {
    format!(
        r#"T={target}
KILN_BUILD_STD=
sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/$T/lib" ]; then
  if [ -f "$sysroot/lib/rustlib/src/rust/library/Cargo.lock" ]; then
    export RUSTC_BOOTSTRAP=1
    KILN_BUILD_STD=-Zbuild-std=std,panic_abort
  else
    echo "kiln: the builder has no Rust standard library for $T: use a builder with that target installed (rustup target add $T) or with rust-src to build it" >&2
    exit 3
  fi
fi
case "$T" in
  aarch64-unknown-linux-gnu)
    if [ "$(uname -m)" != aarch64 ]; then
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    fi ;;
  x86_64-unknown-linux-musl)
    if [ -n "$KILN_BUILD_STD" ] && command -v musl-gcc >/dev/null; then
      export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc CC_x86_64_unknown_linux_musl=musl-gcc
      us=$(printf '')
      CARGO_ENCODED_RUSTFLAGS="${{CARGO_ENCODED_RUSTFLAGS:+$CARGO_ENCODED_RUSTFLAGS$us}}-Clink-self-contained=no$us-Crelocation-model=static$us-Lnative=/usr/local/lib/kiln-musl"
      export CARGO_ENCODED_RUSTFLAGS
    fi ;;
esac
"#
    )
}

/// Shell lines that make this build the only one in the shared target
/// volume until its binary is copied out, and its sources newer than any
/// output there. cargo judges a path crate fresh by mtimes: without this, a
/// concurrent build of another checkout with the same package name that
/// finished after this upload would look fresh, and its binary would be
/// copied out as this one's.
/// `under_lock` runs holding the lock, before the sources are touched;
/// restore staging directories a killed build left (a day old) go.
fn exclusive_sources(src_dir: &str, under_lock: &str) -> String {
    format!(
        "exec 9>{TARGET_DIR}/.kiln-build-lock\n\
         if command -v flock >/dev/null; then flock 9; else echo 'kiln: the builder has no flock; concurrent builds of one package may race' >&2; fi\n\
         find {TARGET_DIR} -maxdepth 1 -name '.kiln-restore-*' -mmin +1440 -exec rm -rf {{}} + 2>/dev/null || true\n\
         {under_lock}find {src_dir} -exec touch -c {{}} +\n"
    )
}
