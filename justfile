# kache's recipes; `.ci/run` runs `scripts/test-all.sh`, which runs `just ci`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Everything CI checks: formatting, lints, tests, packaging, e2e and fault tests, examples, docs.
ci: fmt-check lint test package e2e examples doc

# Format the code.
fmt:
    cargo fmt --all

# Check formatting.
fmt-check:
    cargo fmt --all -- --check

# Clippy on every target, warnings as errors; kache-store also without its `metrics` feature,
# kache-watch without `protobuf` and kache-controller without `metrics` (the workspace build
# turns them on for the tests). Then the library crates' modules: no module may reach itself
# through the `crate::` paths of its code.
lint:
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p kache-store --all-targets -- -D warnings
    cargo clippy -p kache-watch --all-targets -- -D warnings
    cargo clippy -p kache-controller --all-targets -- -D warnings
    cargo test -p kache-tests --test module_cycles

# Unit, property and doc tests (no cluster needed), kache-store with and without `metrics`,
# kache-watch with and without `protobuf`; then the loom models of kache-store's fan-out, in
# their own target folder (the cfg changes every crate's build).
test:
    cargo test -p kache-watch -p kache-store -p kache-controller
    cargo test -p kache --features metrics,protobuf,controller
    cargo test -p kache-watch --features protobuf
    cargo test -p kache-store --features metrics
    cargo test -p kache-controller --features metrics
    RUSTFLAGS="--cfg kache_loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" cargo test --release -p kache-store --lib loom

# Package the library crates as crates.io would get them, and build each from its package alone.
# Cargo packages workspace members as one set, so their dependencies on each other resolve
# before any of them is on crates.io.
# Cargo treats a registry package as immutable: it unpacks the packages it verifies against into
# `$CARGO_HOME/registry/src/-<hash of the temporary registry's path>/`, never refreshes an
# unpacked copy, and reuses a build of one whatever its sources. A second run from the same
# checkout path would verify against the first run's kache-watch, so both go first: our crates'
# unpacked copies, and the verification's own build folder (removed again at the end).
package:
    #!/usr/bin/env bash
    set -euo pipefail
    rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/kache-{watch,store,testenv,controller}-* \
        "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/kache-0.*
    verify="${CARGO_TARGET_DIR:-target}/package-verify"
    rm -rf "$verify"
    cargo package --allow-dirty --target-dir "$verify" -p kache-watch -p kache-store -p kache-testenv \
        -p kache-controller -p kache
    rm -rf "$verify"

# End-to-end and fault tests against both local control planes (provisioned on first use):
# kache-testenv's own tests once per server, kache-tests' suites on each server in one run.
# `KACHE_TEST_SERVERS=modern just e2e` keeps to one server.
e2e: control-plane
    #!/usr/bin/env bash
    set -euo pipefail
    servers="${KACHE_TEST_SERVERS:-legacy,modern}"
    for server in ${servers//,/ }; do
        echo "== kache-testenv on the $server server"
        KACHE_TEST_SERVER=$server cargo test -p kache-testenv
    done
    KACHE_TEST_SERVERS=$servers cargo test -p kache-tests

# Run every example (each against its own local control plane) to its end.
examples: control-plane
    cargo build -q -p kache-examples --examples
    for f in examples/*.rs; do echo "== example $(basename "$f" .rs)"; cargo run -q -p kache-examples --example "$(basename "$f" .rs)"; done

# The second build is of the libraries' docs as docs.rs builds them: without this workspace's
# Kubernetes version, with the feature their `[package.metadata.docs.rs]` names.

# Build the docs with warnings as errors, also as docs.rs builds them.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
    K8S_OPENAPI_ENABLED_VERSION= RUSTDOCFLAGS="-D warnings" cargo doc --no-deps \
        -p kache-watch -p kache-store -p kache-testenv -p kache-controller -p kache \
        --features k8s-openapi/latest,kache-watch/protobuf,kache/metrics,kache/protobuf,kache/controller,kache-controller/metrics

# Provision both control planes, each built once and then cached: etcd and kube-apiserver
# v1.20.2 from Debian's source, and etcd 3.5 with the modern server from Debian sid's packages.
control-plane:
    bash crates/kache-testenv/provision/legacy.sh >/dev/null
    bash crates/kache-testenv/provision/modern.sh >/dev/null

# The live demo against a local control plane (or KACHE_USE_EXISTING_CLUSTER=1 with KUBECONFIG).
demo: control-plane
    cargo run --release -p kache-examples --example demo

# In-process benchmarks, kache side by side with kube-runtime.
bench:
    cargo bench -p kache-benches

# End-to-end initial-sync benchmark against the local control plane, beside client-go's informer
# (its runner is built once from Debian sid's packages, then cached).
bench-e2e: control-plane
    KACHE_CLIENTGO="$(bash benches/clientgo/build.sh | tail -n1)" cargo run --release -p kache-benches --bin e2e-sync

# Warm restart (snapshot restored, watch resumed) against a cold start, and the snapshot format.
bench-warm: control-plane
    cargo run --release -p kache-benches --bin warm-restart

# The soak test: minutes of churn with slow subscribers, then a convergence check.
soak: control-plane
    cargo test --release -p kache-tests --test soak -- --ignored --nocapture

# Counted with valgrind's cachegrind: repeatable whatever else the machine runs. The argument
# sizes the store.

# Instructions of sync, apply, get and one subscriber's delivery, kache beside kube-runtime.
bench-instructions objects="10000":
    cargo build --profile bench -p kache-benches --bin reflect-instructions
    "${CARGO_TARGET_DIR:-target}/release/reflect-instructions" {{objects}}

# Regenerate docs/benchmarks.md and docs/charts/ from the benches' results in benches/results/.
bench-report:
    cargo run -p kache-benches --bin bench-report
