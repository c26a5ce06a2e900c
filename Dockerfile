# sandgate image for users with Docker: the binary and the shipped policies on a
# distroless base. The tests build the same image without a container engine
# (scripts/build-image.sh: Debian's libc on a from-scratch layer, non-root) and run it
# in the real node (tests/install); keep the two alike.
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
