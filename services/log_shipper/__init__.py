"""Log-shipper: follows one Docker host's dyno logs; stores them encrypted, tails, drains."""
