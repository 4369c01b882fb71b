"""The landing zone and the warehouse as one configurable resource.

Both locations use the same backend rules (local path or ``s3://bucket/prefix``)
and the same S3 endpoint, so switching a deployment to S3 is two variables.
Credentials come from boto3's standard chain and never pass through config.
"""

from functools import cached_property

from dagster import ConfigurableResource

from labelops.storage import Store, open_store


class StorageResource(ConfigurableResource):
    """Where exports land and where every asset output is written."""

    landing: str
    warehouse: str
    s3_endpoint_url: str | None = None

    @cached_property
    def landing_store(self) -> Store:
        return open_store(self.landing, endpoint_url=self.s3_endpoint_url)

    @cached_property
    def warehouse_store(self) -> Store:
        return open_store(self.warehouse, endpoint_url=self.s3_endpoint_url)
