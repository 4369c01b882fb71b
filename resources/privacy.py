"""How annotator identities are stored: as delivered, or as keyed pseudonyms (labelops.privacy).

The key must be given as ``EnvVar(...)``: Dagster then resolves it in the process that runs the step and
shows only the variable's name on the UI's resource page, where a plain string value would be displayed
to everyone who can open the UI.
"""

from dagster import ConfigurableResource
from pydantic import Field

from labelops import privacy
from labelops.ingest import Ingested


class AnnotatorIdsResource(ConfigurableResource):
    """The deployment's annotator id policy, applied by ingest before a table is written."""

    mode: str = privacy.AS_DELIVERED
    key: str = Field(default="", repr=False)

    def protect(self, exports: Ingested) -> Ingested:
        return privacy.protect_exports(exports, self.mode, self.key)
