#!/bin/bash
# Fetches one buildpack inside a hardened container; see slipway.services.builder.buildpacks.
# In:  SLIPWAY_KIND (git|tarball), SLIPWAY_URL, SLIPWAY_REF (may be empty),
#      SLIPWAY_PIN (host:port:addr[,addr...], the addresses the host's egress guard checked),
#      SLIPWAY_MAX_BYTES. /fetch is a size-capped tmpfs; /buildpack (rw) receives the tree.
# Out: exit 0, or a last line "slipway-fetch: <reason>" and a non-zero exit.
set -uo pipefail
work=/fetch/bp
fail() { echo "slipway-fetch: $1"; exit 1; }
mkdir -p "$work" || fail "cannot make the fetch folder"
case "$SLIPWAY_KIND" in
  git)
    ref=()
    [ -n "$SLIPWAY_REF" ] && ref=(--branch "$SLIPWAY_REF")
    # Only https, only the checked addresses, no redirect to anywhere else, no submodules.
    GIT_ALLOW_PROTOCOL=https GIT_TERMINAL_PROMPT=0 git \
      -c "http.curloptResolve=$SLIPWAY_PIN" -c http.followRedirects=false \
      -c protocol.allow=never -c protocol.https.allow=always -c credential.helper= \
      clone --quiet --depth 1 --no-tags "${ref[@]}" -- "$SLIPWAY_URL" "$work" 2>&1 | tail -n 5
    [ "${PIPESTATUS[0]}" -eq 0 ] ||
      fail "git clone failed (see above; a buildpack may hold at most $SLIPWAY_MAX_BYTES bytes, and redirects are not followed)"
    rm -rf "$work/.git"
    ;;
  tarball)
    status=$(curl --fail --silent --show-error --proto '=https' --max-redirs 0 \
      --max-filesize "$SLIPWAY_MAX_BYTES" --resolve "$SLIPWAY_PIN" --write-out '%{http_code}' \
      --output /fetch/bp.tgz -- "$SLIPWAY_URL" 2> /fetch/curl.err)
    code=$?
    tail -n 5 /fetch/curl.err
    [ "$code" -eq 0 ] ||
      fail "downloading the tarball failed (see above; at most $SLIPWAY_MAX_BYTES bytes)"
    # curl does not follow a redirect here; it must not be mistaken for the tarball.
    [ "$status" = 200 ] ||
      fail "the server answered HTTP $status, not 200 (redirects are not followed: name the final URL)"
    tar -xzf /fetch/bp.tgz -C "$work" --no-same-owner --no-same-permissions 2>&1 | tail -n 5
    [ "${PIPESTATUS[0]}" -eq 0 ] ||
      fail "the tarball could not be unpacked (see above; it may unpack to at most $SLIPWAY_MAX_BYTES bytes)"
    rm -f /fetch/bp.tgz
    # A lone top folder holding bin/ (GitHub tarballs, `git archive --prefix`) is the buildpack.
    shopt -s dotglob nullglob
    entries=("$work"/*)
    if [ ${#entries[@]} -eq 1 ] && [ ! -L "${entries[0]}" ] && [ -d "${entries[0]}/bin" ]; then
      mv "${entries[0]}" /fetch/top && rmdir "$work" && mv /fetch/top "$work"
    fi
    ;;
  *) fail "unknown kind $SLIPWAY_KIND" ;;
esac
[ -f "$work/bin/detect" ] && [ -f "$work/bin/compile" ] ||
  fail "the buildpack has no bin/detect and bin/compile at its top"
# The build user must read everything and run bin/* (a careless commit drops the x bits).
chmod -R u+rwX,go+rX,go-w "$work" && chmod a+rx "$work"/bin/*
cp -a "$work/." /buildpack/ || fail "copying the buildpack failed"
