"""What every keyring operation on a team checks first: that its keys were not shredded."""

from __future__ import annotations

from datetime import UTC, datetime

from slipway.libs.errors import Gone
from slipway.services.keyring.store import Team


def check_alive(team: Team | None) -> None:
    """Raise Gone if the team was crypto-shredded (a team never seen is alive)."""
    if team is None or team.shredded_at is None:
        return
    when = datetime.fromtimestamp(team.shredded_at, UTC).isoformat(timespec="seconds")
    because = f" ({team.shred_reason})" if team.shred_reason else ""
    raise Gone(
        f"The keys of team {team.team_id} were destroyed (crypto-shredded) on {when}{because}:"
        " data encrypted under them can never be decrypted again."
    )
