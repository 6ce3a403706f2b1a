# syntax=docker/dockerfile:1

# ---- build ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, in their own layer: build the workspace once with empty sources so
# that a source-only change does not recompile every crate. The workspace has two
# members (the crate and tests/testkit), so both manifests must be present.
COPY Cargo.toml Cargo.lock ./
COPY tests/testkit/Cargo.toml tests/testkit/Cargo.toml
RUN mkdir -p src tests/testkit/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/testkit/src/lib.rs \
 && cargo build --release --locked --bin monoship \
 && rm -rf src tests/testkit/src

COPY src src
COPY tests/testkit/src tests/testkit/src
# COPY keeps the context's mtimes, which can be older than the placeholder build:
# touch the crate roots so that cargo rebuilds monoship itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin monoship \
 && install -m 0755 target/release/monoship /monoship

# ---- run -----------------------------------------------------------------------------
# The binary links glibc dynamically (rustls, no OpenSSL): distroless/cc has glibc and
# libgcc and nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /monoship /monoship
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/monoship"]
CMD ["run"]
