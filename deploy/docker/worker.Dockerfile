# syntax=docker/dockerfile:1
# The GPU worker image: cd-worker built with candle's CUDA kernels on an
# NVIDIA CUDA devel image, run on the matching runtime image (cudart, cuBLAS,
# cuRAND, NVRTC; the driver's libcuda.so.1 is mounted by the NVIDIA container
# runtime at run time).
#
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile \
#     --build-arg CUDA_COMPUTE_CAP=90 -t cd-worker:0.1.0-cuda13.0-sm90 .
#
# CUDA_COMPUTE_CAP is the GPUs' compute capability without the dot: 80 for
# A100, 86 for A10/RTX 30xx, 89 for L4/L40S, 90 for H100/H200 (default).
# CUDA stays on 13.0.x: a newer nvcc emits PTX that 580-series drivers refuse.
#
# Base images are pinned by tag and digest; change tag and digest together
# (`docker buildx imagetools inspect IMAGE:TAG`), and keep devel and runtime
# on the same CUDA version.

# The Rust toolchain comes from the official image rather than a curl|sh
# installer, so it is pinned like every other input.
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS rust

FROM nvidia/cuda:13.0.1-devel-ubuntu24.04@sha256:7d2f6a8c2071d911524f95061a0db363e24d27aa51ec831fcccf9e76eb72bc92 AS build
ARG CUDA_COMPUTE_CAP=90
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:$PATH \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
# A C/C++ compiler for nvcc's host code and for crates that build C
# (tokenizers' onig). Versions follow the pinned Ubuntu release of the base.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cd-worker --features cuda \
    && install -D -m 0755 target/release/cd-worker /out/cd-worker

FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04@sha256:c3fde347d52d578c84fd644bc177bc7ec333feaf11550d990da4084d7612e4c7
COPY --from=build /out/cd-worker /usr/local/bin/cd-worker
# Where Hugging Face weights are cached; the Kubernetes manifests mount the
# model-cache volume here.
ENV HF_HOME=/var/cache/concept-depth/huggingface
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cd-worker"]
