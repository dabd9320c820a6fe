# The ranking server: a Go binary plus the onnxruntime C library from the
# pinned Python wheel (the reference backend), on a distroless non-root base.
# Build from the repository root: docker build -f deploy/docker/server.Dockerfile .

# onnxruntime's C library, at the version python/pyproject.toml pins.
FROM python:3.11-slim AS onnxruntime
COPY python/pyproject.toml /src/pyproject.toml
RUN pip install --no-cache-dir "$(grep -o 'onnxruntime==[0-9.]*' /src/pyproject.toml)" \
 && cp "$(python -c 'import onnxruntime, pathlib; print(next((pathlib.Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.*")))')" /libonnxruntime.so

FROM golang:1.26-bookworm AS build
WORKDIR /src/go
COPY go/go.mod go/go.sum ./
# The client module holds the generated code; go.mod replaces it by this directory.
COPY go/client/go.mod go/client/go.sum ./client/
RUN go mod download
COPY go/ ./
# cgo stays on for the onnxruntime backend; the native backend needs none.
RUN go build -trimpath -ldflags="-s -w" -o /out/ranker-server ./cmd/ranker-server
# The readiness check over mTLS (the kubelet's gRPC probe speaks plaintext
# only); static, as the final image has no shell.
RUN CGO_ENABLED=0 GOBIN=/out go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62 \
 && mv /out/grpc-health-probe /out/grpc_health_probe

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ranker-server /usr/local/bin/ranker-server
COPY --from=build /out/grpc_health_probe /usr/local/bin/grpc_health_probe
COPY --from=onnxruntime /libonnxruntime.so /usr/local/lib/libonnxruntime.so
# gRPC and metrics keep the server's loopback defaults: a container run
# without flags exposes nothing; the Kubernetes manifests choose 0.0.0.0.
ENV RANKER_ORT_LIB=/usr/local/lib/libonnxruntime.so
USER 65532:65532
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/ranker-server"]
