# The triggerd binary in a small Debian image:
#   docker build -t triggerd:dev .
# Build stage: the Rust toolchain plus what the -sys crates compile (librdkafka with the
# system OpenSSL, aws-lc, mimalloc): a C toolchain (in the rust image), pkg-config and
# libssl-dev.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p triggerd \
 && install -D target/release/triggerd /out/triggerd

# Runtime: rdkafka links OpenSSL 3 dynamically (libssl3); CA certificates for TLS to
# webhooks, brokers and AWS. Runs as an unprivileged user (manifests/deploy/ sets the same).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/triggerd /usr/local/bin/triggerd
COPY scripts /usr/share/triggerd/scripts
COPY policies /usr/share/triggerd/policies
WORKDIR /usr/share/triggerd
USER 65532:65532
EXPOSE 9090 12000
ENTRYPOINT ["/usr/local/bin/triggerd"]
CMD ["run", "--kube"]
