#!/bin/bash
# Runs the staged buildpacks the Heroku classic way; see slipway.services.builder.buildpacks.
set -uo pipefail
out=/slipway/out
# The builder prints the reason itself, as the build's last line.
fail() { echo "$1" > "$out/failure"; exit 1; }
# The names the customer gave, by folder: written by the builder into root-owned /slipway.
declare -A names=()
while IFS=$'\t' read -r folder name; do
  names[$folder]=$name
done < /slipway/names
label_of() { local folder; folder=$(basename "$1"); printf '%s' "${names[$folder]:-$folder}"; }
chosen=()
for bp in /buildpacks/*/; do
  bp=${bp%/}
  label=$(label_of "$bp")
  if name=$("$bp/bin/detect" /app); then
    name=$(printf '%s' "$name" | head -n1)
    echo "-----> ${name:-$label} app detected"
    chosen+=("$bp")
    [ "$SLIPWAY_DETECT" = first ] && break
  elif [ "$SLIPWAY_DETECT" = each ]; then
    fail "App not compatible with buildpack: $label (bin/detect said no)"
  fi
done
[ ${#chosen[@]} -gt 0 ] || fail "No default language could be detected for this app; add a Procfile and requirements.txt, package.json, public/ or static.json, or name a buildpack"
i=0
for bp in "${chosen[@]}"; do
  label=$(label_of "$bp")
  "$bp/bin/compile" /app /cache /env || fail "Failed to compile app with buildpack $label (bin/compile exited $?)"
  if [ -x "$bp/bin/release" ]; then
    "$bp/bin/release" /app > "$out/release-$i.yml" || fail "bin/release of buildpack $label failed"
  fi
  i=$((i + 1))
done
