"""A small ext4 file system on a loop device, to fill on purpose: what a full disk does.

    with LoopFs(tmp_path, megabytes=64) as fs:
        fs.fill_to(92)      # percent, as df counts it
        fs.fill_up()        # to 0 bytes left: fallocate, then dd until ENOSPC
        fs.free()           # the filler files go; what the test put there stays

Needs root (mount) and loop devices; `available()` says why not when they are missing.
The file system is unmounted and its image removed on exit, on failure too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from slipway.libs.diskwatch import measure


def available() -> str | None:
    """Why a loop file system cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "loop file systems need root (mount)"
    for tool in ("losetup", "mkfs.ext4", "mount", "fallocate"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["losetup", "-f"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"no free loop device: {probe.stderr.strip()}"
    return None


class LoopFs:
    """An ext4 image of `megabytes`, mounted at `<where>/mnt`."""

    def __init__(self, where: Path, megabytes: int = 64) -> None:
        self.image = where / "fs.img"
        self.mount = where / "mnt"
        self.megabytes = megabytes
        self._fillers = 0

    def __enter__(self) -> LoopFs:
        self.mount.mkdir(parents=True, exist_ok=True)
        subprocess.run(["truncate", "-s", f"{self.megabytes}M", str(self.image)], check=True)
        # No blocks reserved for root: the services run as root in tests, and df's Use%
        # should reach 100 % when nothing is left for anyone.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], check=True)
        self.mount.chmod(0o755)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Lazy: a process of a failed test may still hold a file open; the device is freed
        # once it lets go (mount -o loop set autoclear).
        subprocess.run(["umount", "-l", str(self.mount)], capture_output=True, check=False)
        self.image.unlink(missing_ok=True)

    def used_percent(self) -> float:
        return measure("test", self.mount).used_percent

    def _filler(self) -> Path:
        self._fillers += 1
        return self.mount / f"filler-{self._fillers}"

    def fill_to(self, percent: float) -> float:
        """Add a filler file so that df shows about `percent` % used; the use reached."""
        st = os.statvfs(self.mount)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        seen = used + st.f_bavail * st.f_frsize
        wanted = int(seen * percent / 100) - used
        if wanted > 0:
            subprocess.run(["fallocate", "-l", str(wanted), str(self._filler())], check=True)
        return self.used_percent()

    def fill_up(self) -> None:
        """Leave 0 bytes: fallocate nearly all, then dd until ENOSPC takes the rest."""
        st = os.statvfs(self.mount)
        room = st.f_bavail * st.f_frsize - 256 * 1024
        if room > 0:
            subprocess.run(["fallocate", "-l", str(room), str(self._filler())], check=True)
        # ext4 settles its delayed allocations after a write: top up until nothing is left.
        for _ in range(5):
            done = subprocess.run(
                ["dd", "if=/dev/zero", f"of={self._filler()}", "bs=1k"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert "No space left" in done.stderr, done.stderr  # dd stopped at a full disk
            os.sync()
            if os.statvfs(self.mount).f_bavail == 0:
                return
        raise AssertionError(f"{self.mount} still has room after filling it")

    def free(self) -> None:
        """Remove the filler files (only them)."""
        for filler in self.mount.glob("filler-*"):
            filler.unlink()
