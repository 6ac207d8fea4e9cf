# meshgate container image: a static-ish release build on Debian slim.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin meshgate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 meshgate
COPY --from=build /src/target/release/meshgate /usr/local/bin/meshgate
COPY policies /etc/meshgate/policies
USER meshgate
# 9092: bootstrap; 9093+: one port per broker node id; 9644: admin (metrics, health)
EXPOSE 9092 9093-9103 9644
ENTRYPOINT ["/usr/local/bin/meshgate"]
CMD ["run", "--listen", "0.0.0.0:9092", "--admin", "0.0.0.0:9644", "--policies", "/etc/meshgate/policies"]
