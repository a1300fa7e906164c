"""registry-proxy: the only door to the app image registry (Distribution, on a unix socket).

    app.py           the ServiceApp: Distribution, the proxy server, RPCs, GC events
    handlers.py      credentials.issue, images.list, RELEASE_CREATED / APP_DESTROYED
    policy.py        which service may ask for pull or push credentials
    credentials.py   HMAC-signed, scoped, expiring tokens used as the password
    proxy.py         the registry HTTP API for Docker engines: auth, scope, streaming relay
    distribution.py  Distribution as a child process: config, start, restart, read-only
    gate.py          keeps garbage collection away from pushes in flight
    gc.py            keep the rollback window's images, delete the rest, collect blobs
    store.py         images per app, releases, the IMAGE_PUSHED outbox
    announcer.py     relays the outbox to JetStream
    client.py        `docker_auth()`: what the builder and scheduler call
    settings.py      RegistryProxySettings (SLIPWAY_REGISTRY_*, SLIPWAY_ROLLBACK_WINDOW)

See README.md in this folder.
"""
