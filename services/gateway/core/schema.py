"""The gateway database's schema, as numbered migrations (`libs.storage` applies them at open).

A migration is never edited once released: a change is a new entry at the end.
Config values live only as ciphertext (`config_versions.ciphertext`), tokens
only as SHA-256 (`tokens.token_hash`); `audit_entries.entry` holds the exact
canonical bytes the chain hash covers.
"""

from __future__ import annotations

MIGRATIONS = [
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        name TEXT,
        platform_admin INTEGER NOT NULL DEFAULT 0,
        default_team_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        token_hash TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        scope TEXT NOT NULL,
        issued_by TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at REAL,
        revoked_at TEXT
    );
    CREATE INDEX tokens_user ON tokens(user_id);
    CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        personal INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        shredded_at TEXT
    );
    CREATE TABLE members (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL REFERENCES teams(id),
        user_id TEXT NOT NULL REFERENCES users(id),
        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (team_id, user_id)
    );
    CREATE INDEX members_user ON members(user_id);
    CREATE TABLE apps (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        team_id TEXT NOT NULL REFERENCES teams(id),
        owner_id TEXT NOT NULL REFERENCES users(id),
        maintenance INTEGER NOT NULL DEFAULT 0,
        config_version_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        released_at TEXT
    );
    CREATE INDEX apps_team ON apps(team_id);
    CREATE TABLE config_versions (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE releases (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        description TEXT NOT NULL,
        status TEXT NOT NULL,
        image_ref TEXT,
        image_digest TEXT,
        config_version_id TEXT,
        process_types TEXT NOT NULL DEFAULT '{}',
        user_id TEXT,
        user_email TEXT NOT NULL,
        rollback_of INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (app_id, version)
    );
    CREATE TABLE formation (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        size TEXT NOT NULL,
        command TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (app_id, type)
    );
    CREATE TABLE audit_entries (
        team_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        app_id TEXT,
        entry TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (team_id, seq)
    );
    CREATE INDEX audit_app ON audit_entries(app_id, team_id, seq);
    CREATE TABLE audit_checkpoints (
        team_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        head TEXT NOT NULL,
        at TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (team_id, seq)
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        payload BLOB NOT NULL,
        request_id TEXT,
        created_at REAL NOT NULL,
        sent_at REAL
    );
    CREATE INDEX outbox_pending ON outbox(seq) WHERE sent_at IS NULL
    """,
    """
    CREATE TABLE sources (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        app_id TEXT NOT NULL DEFAULT '',
        user_id TEXT NOT NULL,
        size INTEGER,
        checksum TEXT,
        created_at TEXT NOT NULL,
        uploaded_at TEXT,
        expires_at REAL NOT NULL
    );
    CREATE INDEX sources_expiry ON sources(expires_at);
    CREATE TABLE builds (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        source_url TEXT NOT NULL,
        source_checksum TEXT,
        source_version TEXT,
        source_id TEXT,
        buildpacks TEXT NOT NULL DEFAULT '[]',
        user_id TEXT,
        user_email TEXT NOT NULL,
        release_id TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX builds_app ON builds(app_id, created_at)
    """,
    # log-sessions (services/gateway/logs/logs.py): a short-lived URL per session, token hashed.
    """
    CREATE TABLE log_sessions (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        dyno TEXT,
        source TEXT,
        lines INTEGER NOT NULL,
        tail INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX log_sessions_expiry ON log_sessions(expires_at)
    """,
    """
    CREATE TABLE domains (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        hostname TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX domains_app ON domains(app_id, hostname)
    """,
    # log settings (services/gateway/api/logsettings.py): NULL days = the platform default;
    # the revision orders the LOG_RETENTION_CHANGED events log-shippers apply.
    """
    ALTER TABLE apps ADD COLUMN log_retention_days REAL;
    ALTER TABLE apps ADD COLUMN log_settings_revision INTEGER NOT NULL DEFAULT 0
    """,
    # No operator impersonation (tokens.py, grants.py): disabled users, one-time
    # invitations redeemed with a secret only the user holds (`verifier` is its
    # SHA-256), break-glass access grants, and every audit key ever used.
    """
    ALTER TABLE users ADD COLUMN disabled_at TEXT;
    CREATE TABLE invitations (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id),
        verifier TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL,
        redeemed_at TEXT
    );
    CREATE INDEX invitations_user ON invitations(user_id);
    CREATE TABLE access_grants (
        id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL REFERENCES teams(id),
        user_id TEXT NOT NULL REFERENCES users(id),
        role TEXT NOT NULL CHECK (role IN ('member', 'viewer')),
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at TEXT,
        revoked_by TEXT
    );
    CREATE INDEX access_grants_team ON access_grants(team_id, user_id);
    CREATE TABLE audit_keys (
        key_id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        valid_from TEXT NOT NULL,
        valid_until TEXT
    )
    """,
    # Add-ons (services/gateway/addons/addons.py): the customer's database password only sealed.
    """
    CREATE TABLE addons (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        team_id TEXT NOT NULL,
        name TEXT NOT NULL UNIQUE,
        plan TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('provisioning', 'provisioned', 'deprovisioned')),
        attachment_id TEXT NOT NULL,
        attachment_name TEXT NOT NULL,
        db_name TEXT NOT NULL,
        db_user TEXT NOT NULL,
        password BLOB NOT NULL,
        host_id TEXT,
        provision_message TEXT NOT NULL DEFAULT '',
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (app_id, attachment_name)
    );
    CREATE INDEX addons_app ON addons(app_id)
    """,
    # Backups (services/gateway/addons/backups.py): a restored add-on remembers its source, and a
    # destroyed one leaves a tombstone so its final backup stays listed and restorable.
    """
    ALTER TABLE addons ADD COLUMN restore TEXT NOT NULL DEFAULT '';
    CREATE TABLE addon_tombstones (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        team_id TEXT NOT NULL,
        name TEXT NOT NULL,
        plan TEXT NOT NULL,
        db_name TEXT NOT NULL,
        db_user TEXT NOT NULL,
        destroyed_by TEXT NOT NULL,
        destroyed_at TEXT NOT NULL
    );
    CREATE INDEX addon_tombstones_app ON addon_tombstones(app_id, name)
    """,
    # App features (services/gateway/api/catalog.py): HSTS on the app's HTTPS answers.
    """
    ALTER TABLE apps ADD COLUMN hsts INTEGER NOT NULL DEFAULT 0
    """,
    # Dashboard sessions and one-time login links (services/gateway/web/sessions.py): only
    # hashes of the cookie and the link's code, each bound to the token it stands in for.
    """
    CREATE TABLE web_sessions (
        id_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_id TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX web_sessions_user ON web_sessions(user_id);
    CREATE TABLE web_login_links (
        code_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_id TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL
    )
    """,
    # Metrics drains (services/gateway/api/metricsdrains.py): a scrape credential per row,
    # stored only as its SHA-256; it goes with its app.
    """
    CREATE TABLE metrics_drains (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX metrics_drains_app ON metrics_drains(app_id)
    """,
]
