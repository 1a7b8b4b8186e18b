#!/usr/bin/env bash
# Builds the local test image `ris-test/busybox:1` (no registry is reachable here):
# a rootfs made of Debian's static busybox, imported with `docker import`.
#
#   docker run -d ris-test/busybox:1 httpd -f -p 80 -h /www   # serves /index.html, /health
#
# Idempotent (does nothing when the image exists) and safe to run in parallel (flock).
# Needs a running dockerd and the busybox-static package (installed when missing).
set -euo pipefail

IMAGE="${RIS_TEST_IMAGE:-ris-test/busybox:1}"
# Bump when the rootfs below changes: an image with another recipe is rebuilt.
RECIPE=2
LOCK="${TMPDIR:-/tmp}/ris-test-image.lock"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

exec 9>"$LOCK"
flock 9

have="$(docker image inspect --format '{{ index .Config.Labels "ris.test-image" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$RECIPE" ]; then
  exit 0
fi

BUSYBOX=/bin/busybox
if ! [ -x "$BUSYBOX" ] || ! "$BUSYBOX" --list 2>/dev/null | grep -qx httpd; then
  as_root apt-get install -y -qq busybox-static >/dev/null
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/www" "$ROOT/tmp" "$ROOT/etc"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for tool in sh ash httpd sleep wget echo cat true false ls ps kill env printf \
            id hostname mkdir rm touch nc ping seq head tail grep sed date uname; do
  ln -sf busybox "$ROOT/bin/$tool"
done
echo '<html><body>ris test image</body></html>' >"$ROOT/www/index.html"
echo 'ok' >"$ROOT/www/health"
echo 'root:x:0:0:root:/:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"

tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/bin' \
  --change 'CMD ["sh"]' \
  --change "LABEL ris.test-image=$RECIPE" \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
