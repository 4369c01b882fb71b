"""The landing zone and the warehouse as one configurable resource.

Both locations use the same backend rules (local path or ``s3://bucket/prefix``)
and the same S3 endpoint, so switching a deployment to S3 is two variables.
Credentials come from boto3's standard chain and never pass through config.
"""

from functools import cached_property

from dagster import ConfigurableResource

from labelops.ingest import DEFAULT_BATCH_ROWS, DEFAULT_MAX_EXPORT_BYTES, DEFAULT_MAX_FILE_BYTES, ReadPolicy
from labelops.storage import Store, open_store


class StorageResource(ConfigurableResource):
    """Where exports land and where every asset output is written, and how landing files are read.

    ``settle_seconds``: a landing file modified more recently than this may still be being
    uploaded, so ingest defers it to a later run (0 reads everything at once).
    ``batch_rows``: the rows held at once where a table is streamed (production logs, which grow with traffic).
    """

    landing: str
    warehouse: str
    s3_endpoint_url: str | None = None
    settle_seconds: float = 0.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_export_bytes: int = DEFAULT_MAX_EXPORT_BYTES
    batch_rows: int = DEFAULT_BATCH_ROWS

    def read_policy(self) -> ReadPolicy:
        """Limits, and the cut-off for files still arriving, as of now."""
        return ReadPolicy.settling(
            self.settle_seconds, max_file_bytes=self.max_file_bytes, max_export_bytes=self.max_export_bytes
        )

    @cached_property
    def landing_store(self) -> Store:
        return open_store(self.landing, endpoint_url=self.s3_endpoint_url)

    @cached_property
    def warehouse_store(self) -> Store:
        return open_store(self.warehouse, endpoint_url=self.s3_endpoint_url)
