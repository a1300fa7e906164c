"""The typed bus: RPC, commands, events and live streams over NATS and JetStream.

    bus = await Bus.connect(url, service=Service.GATEWAY)
    reply = await bus.call(keyring.DATAKEY_GENERATE, GenerateDataKey(...))
    answers = await bus.gather(log_shipper.METRICS_GET, GetMetrics(...))  # every instance
    await bus.send(builder.BUILD, BuildRequested(...))
    await bus.publish(gateway.APP_CREATED, AppCreated(...))

See `bus.py` for the connection and RPC, `consumer.py` for at-least-once delivery.
"""

from slipway.libs.bus.bus import Bus, Gathered
from slipway.libs.bus.consumer import Consumer, Delivery, NotProvisioned, Route, route
from slipway.libs.bus.provision import ensure_streams, provision

__all__ = [
    "Bus",
    "Consumer",
    "Delivery",
    "Gathered",
    "NotProvisioned",
    "Route",
    "ensure_streams",
    "provision",
    "route",
]
