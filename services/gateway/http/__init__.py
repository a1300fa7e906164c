"""What every request goes through: auth, errors, middleware, routing, ranges, views."""
