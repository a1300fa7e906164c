"""Add-ons (PostgreSQL) and their backups, as the API shows them."""
