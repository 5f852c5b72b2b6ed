# The meshward image: a static binary on distroless, running as non-root.
#
#   docker build -t meshward:latest --build-arg VERSION=$(git describe --tags --always) .
#
# examples/kubernetes runs it (meshward.yaml, agent.yaml). The binary
# needs no libc (CGO_ENABLED=0), writes nothing but what its
# configuration names, and listens on unprivileged ports only.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
# vtprotobuf: the faster ext_authz response encoding, as `make build`.
RUN CGO_ENABLED=0 go build -trimpath -tags vtprotobuf \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/meshward ./cmd/meshward

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/meshward /usr/local/bin/meshward
# nonroot (65532), as the Deployment's runAsUser.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshward"]
CMD ["serve"]
