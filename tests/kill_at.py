"""A real materialization in this process, SIGKILL-ed at the first storage write whose key matches a pattern.

python tests/kill_at.py PATTERN PARTITION ASSET [ASSET ...]   (LABELOPS_* environment as usual)

The process is killed for real (no cleanup, no finally blocks), exactly when the write would start.
"""

from __future__ import annotations

import os
import re
import signal
import sys


def main() -> None:
    pattern, partition, *assets = sys.argv[1:]
    from labelops import storage

    wanted = re.compile(pattern)
    for method in ("write_bytes", "create"):
        original = getattr(storage.LocalStore, method)

        def killing(self, key, data, _original=original):
            if wanted.search(key):
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(self, key, data)

        setattr(storage.LocalStore, method, killing)

    from dagster import AssetKey, DagsterInstance, materialize

    from pipelines.definitions import defs

    result = materialize(
        list(defs.assets),
        selection=[AssetKey(a) for a in assets],
        partition_key=partition,
        resources=defs.resources,
        instance=DagsterInstance.ephemeral(),
    )
    sys.exit(0 if result.success else 1)


if __name__ == "__main__":
    main()
