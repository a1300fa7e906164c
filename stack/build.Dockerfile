# The build stack: the run stack's rootfs plus compilers and package tools, from Debian's
# packages (stack/packages.build). Built by scripts/build-stack.
ARG BASE
FROM ${BASE}
ARG PACKAGES
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES} \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
RUN groupadd --gid 10000 dyno && useradd --uid 10000 --gid 10000 --home-dir /app --no-create-home --shell /bin/bash dyno \
 && mkdir -p /app /tmp/build /tmp/cache /tmp/env && chown 10000:10000 /app /tmp/build /tmp/cache /tmp/env
ENV LANG=C.UTF-8 HOME=/app STACK=slipway-bookworm
WORKDIR /app
USER 10000:10000
