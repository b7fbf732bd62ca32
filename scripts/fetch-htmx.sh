#!/usr/bin/env bash
# fetch-htmx.sh -- put htmx 2 (htmx.min.js and its licence) into target/htmx/, where
# build.rs embeds it into the binary. htmx comes from a package, not a copy in this
# repository: PyPI's django-js-lib-htmx (htmx repackaged, 0BSD), fetched with pip and
# checked against a pinned SHA-256. docs/architecture.md ("htmx source") says why this
# and not a crate. Idempotent and quiet when the file is already there.
#   Needs: python3 with pip (Debian: python3-pip; scripts/install-test-deps.sh).
#   Honours CARGO_TARGET_DIR; RSP_HTMX_JS (used by build.rs) can point elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.0.3.1
WHEEL=django_js_lib_htmx-${VERSION}-py2.py3-none-any.whl
WHEEL_SHA256=438bb3c92842008e9deaa46b7d896dedd2a08babc7c4574f3223d207c7292ff0

out="${CARGO_TARGET_DIR:-target}/htmx"
[ -s "$out/htmx.min.js" ] && [ -s "$out/LICENSE" ] && exit 0

mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "fetch-htmx: python3 pip is missing (Debian: apt-get install python3-pip)" >&2
  exit 1
fi
echo "fetch-htmx: downloading django-js-lib-htmx ${VERSION} from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  "django-js-lib-htmx==${VERSION}" -d "$tmp" >&2
echo "${WHEEL_SHA256}  $tmp/${WHEEL}" | sha256sum --check --quiet - || {
  echo "fetch-htmx: ${WHEEL} does not have the pinned SHA-256; refusing it" >&2
  exit 1
}
python3 - "$tmp/${WHEEL}" "$out" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for src, dst in [("js_lib_htmx/static/htmx/htmx.min.js", "htmx.min.js"),
                     (f"django_js_lib_htmx-{wheel.split('-')[1]}.dist-info/LICENSE", "LICENSE")]:
        with open(f"{out}/{dst}.tmp", "wb") as f:
            f.write(z.read(src))
PY
mv "$out/LICENSE.tmp" "$out/LICENSE"
mv "$out/htmx.min.js.tmp" "$out/htmx.min.js"
echo "fetch-htmx: $out/htmx.min.js ($(wc -c <"$out/htmx.min.js") bytes)" >&2
