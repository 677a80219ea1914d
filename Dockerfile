# Images of rsigma: `docker build --target daemon -t rsigma:0.1.0 .` (the
# daemon and CLI, run by DetectionEngine pods) and `docker build --target
# operator -t rsigma-operator:0.1.0 .` (the operator, run by the Helm chart).
# Both run as a non-root user on a distroless base with no shell; the
# operator's Deployments also set a read-only root filesystem.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Stripped, without line tables: the images hold no debug information.
ENV CARGO_PROFILE_RELEASE_STRIP=true CARGO_PROFILE_RELEASE_DEBUG=false
RUN cargo build --release --locked -p rsigma-cli --bin rsigma \
 && cargo build --release --locked -p rsigma-operator --bin rsigma-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS daemon
COPY --from=build /src/target/release/rsigma /usr/local/bin/rsigma
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/rsigma"]
CMD ["--help"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /src/target/release/rsigma-operator /usr/local/bin/rsigma-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rsigma-operator"]
