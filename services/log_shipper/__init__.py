"""Log-shipper: takes one Docker host's dyno output; stores it encrypted, tails, drains."""
