"""The customer API's resources, one module per family (apps, config, releases, teams, ...)."""
