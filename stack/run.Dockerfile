# The run stack: Debian's rootfs (docker import) plus the dyno user. Built by scripts/build-stack.
ARG BASE
FROM ${BASE}
# Dynos never run as root: uid 10000 owns /app (the slug) and nothing else.
RUN groupadd --gid 10000 dyno && useradd --uid 10000 --gid 10000 --home-dir /app --no-create-home --shell /bin/bash dyno \
 && mkdir -p /app && chown 10000:10000 /app
ENV LANG=C.UTF-8 HOME=/app
WORKDIR /app
USER 10000:10000
