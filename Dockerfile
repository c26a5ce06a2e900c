# sandgate image: the binary and the shipped policies on a distroless base.
# (Not built in CI here: this machine has no container engine.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sandgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sandgate /usr/local/bin/sandgate
COPY policies/ /etc/sandgate/policies/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sandgate"]
CMD ["serve"]
