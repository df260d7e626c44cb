#!/usr/bin/env bash
# Build the CUDA worker (`cd-worker` with `--features cuda`) on a machine that
# has no system CUDA toolkit, using only PyPI wheels and crates.io.
#
# What it does, and why each step is needed:
#   1. pip-installs NVIDIA's CUDA 13.0 wheels into a target directory. Together
#      they form one toolkit-like tree, `nvidia/cu13/{bin,include,lib}`: nvcc,
#      its front end (crt) and back end (nvvm), the runtime headers, and CCCL
#      (which candle's kernels include). CUDA is pinned to 13.0.x because a
#      newer nvcc emits PTX that a 580-series driver refuses to load.
#   2. Creates unversioned `lib*.so` links (the wheels ship only `libX.so.13`
#      and the linker looks for `libX.so`) for cudart, cublas, cublasLt,
#      curand and nvrtc.
#   3. Generates a link-time stub `libcuda.so` (soname `libcuda.so.1`) that
#      defines every `cu*` driver entry point cudarc binds. The real libcuda
#      belongs to the GPU driver and is found at run time; the stub only lets
#      the link step resolve symbols and is never shipped.
#   4. Builds `cd-worker` and `cd-bench` (`--release --features cuda`) with
#      `CUDA_COMPUTE_CAP` (default 90, Hopper), strips them and copies them to
#      `.cuda-bin/`.
#
# Run time: the binary needs libcudart.so.13, libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10 (and nvrtc for a few kernels) plus the
# driver's libcuda.so.1. It carries an rpath of `$ORIGIN/lib`, so a `lib/`
# folder next to it is searched first (pass `--bundle-libs` to fill
# `.cuda-bin/lib` from the wheels); otherwise the usual loader search applies:
# `LD_LIBRARY_PATH` (e.g. a PyTorch install's `site-packages/nvidia/cu13/lib`),
# then the system's library cache (an nvidia/cuda runtime image, or the
# driver's own libcuda.so.1). See docs/gpu.md.
#
# Usage: scripts/build-cuda.sh [--bundle-libs]
# Environment (all optional):
#   CD_CUDA_TARGET_DIR   cargo target dir        (default: <repo>/target/cuda)
#   CD_CUDA_TOOLKIT_DIR  where the wheels go     (default: <repo>/target/cuda-toolkit)
#   CUDA_COMPUTE_CAP     GPU compute capability  (default: 90)
#   PYTHON               python with pip         (default: python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CD_CUDA_TARGET_DIR:-$repo/target/cuda}"
toolkit_dir="${CD_CUDA_TOOLKIT_DIR:-$repo/target/cuda-toolkit}"
python="${PYTHON:-python3}"
bundle_libs=0
for arg in "$@"; do
    case "$arg" in
        --bundle-libs) bundle_libs=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build-cuda.sh: unknown argument \`$arg\` (expected --bundle-libs)" >&2
            exit 2
            ;;
    esac
done

# The pins below are the tested set; change them together.
wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-nvrtc==13.0.88
    nvidia-curand==10.4.0.35
    nvidia-cublas==13.0.2.14
)

site="$toolkit_dir/site"
stamp="$site/.cd-wheels"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${wheels[*]}" ]]; then
    echo "== installing CUDA wheels into $site"
    rm -rf "$site"
    "$python" -m pip install --quiet --no-deps --only-binary=:all: --target "$site" "${wheels[@]}"
    echo "${wheels[*]}" >"$stamp"
fi
cu13="$site/nvidia/cu13"
for need in bin/nvcc include/cuda_runtime.h lib; do
    [[ -e "$cu13/$need" ]] || {
        echo "build-cuda.sh: $cu13/$need is missing after installing the wheels" >&2
        exit 1
    }
done

# Unversioned names for the linker, in a directory of our own (the wheel tree
# stays as pip wrote it).
link="$toolkit_dir/link"
rm -rf "$link"
mkdir -p "$link"
for lib in cudart cublas cublasLt curand nvrtc; do
    real="$(ls "$cu13/lib/lib$lib.so."* 2>/dev/null | sort -V | tail -n1 || true)"
    [[ -n "$real" ]] || {
        echo "build-cuda.sh: no lib$lib.so.* in $cu13/lib" >&2
        exit 1
    }
    ln -s "$real" "$link/lib$lib.so"
done

# cudarc's driver bindings name every driver entry point it may call; a stub
# defining them all satisfies the linker. Its soname is the real one, so the
# binary asks the loader for the driver's libcuda.so.1.
cargo fetch --manifest-path "$repo/Cargo.toml" --quiet
cudarc_version="$(awk '/^name = "cudarc"/{getline; gsub(/[^0-9.]/, ""); print; exit}' "$repo/Cargo.lock")"
[[ -n "$cudarc_version" ]] || {
    echo "build-cuda.sh: cudarc not in Cargo.lock: is the cuda feature still wired to candle?" >&2
    exit 1
}
cudarc_src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_version" | head -n1)"
bindings="$cudarc_src/src/driver/sys/mod.rs"
[[ -f "$bindings" ]] || {
    echo "build-cuda.sh: cudarc driver bindings not found at $bindings" >&2
    exit 1
}
grep -oE '\bfn cu[A-Za-z0-9_]+\(' "$bindings" | sed -E 's/^fn (.*)\($/\1/' | sort -u |
    awk '{print "void " $1 "(void) {}"}' >"$link/libcuda_stub.c"
stub_count="$(wc -l <"$link/libcuda_stub.c")"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda_stub.c"
echo "== libcuda.so stub with $stub_count driver symbols (cudarc $cudarc_version)"

export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDA_ROOT="$cu13"
export CUDA_HOME="$cu13"
export NVCC="$cu13/bin/nvcc"
export PATH="$cu13/bin:$PATH"
export LIBRARY_PATH="$link:$cu13/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="$target_dir"
# '$ORIGIN' is literal: the loader expands it to the binary's directory.
export RUSTFLAGS="${RUSTFLAGS:-} -C link-args=-Wl,-rpath,\$ORIGIN/lib"

echo "== nvcc: $("$NVCC" --version | tail -n2 | head -n1)"
echo "== cargo build --release -p cd-worker --features cuda (target $target_dir, sm_$CUDA_COMPUTE_CAP)"
cargo build --release --manifest-path "$repo/Cargo.toml" -p cd-worker --features cuda

out="$repo/.cuda-bin"
mkdir -p "$out"
for b in cd-worker cd-bench; do
    cp "$target_dir/release/$b" "$out/$b"
    strip "$out/$b"
done
if ((bundle_libs)); then
    mkdir -p "$out/lib"
    for lib in cudart cublas cublasLt curand nvrtc; do
        cp -L "$(ls "$cu13/lib/lib$lib.so."* | sort -V | tail -n1)" "$out/lib/"
    done
    # The loader asks for the soname (libcublas.so.13, ...); name copies so.
    (cd "$out/lib" && for f in *.so.*; do
        so="$(readelf -d "$f" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
        [[ -n "$so" && "$so" != "$f" ]] && mv "$f" "$so"
    done)
fi
echo "== built $out/cd-worker ($(du -h "$out/cd-worker" | cut -f1)); it needs at run time:"
readelf -d "$out/cd-worker" | grep -E 'NEEDED|RPATH|RUNPATH' | sed 's/^/   /'
