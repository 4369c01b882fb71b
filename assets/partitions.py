"""The daily partitions every dated asset shares: one per landing day, up to yesterday (or up to the configured
end, as the demo does, so the UI shows its days rather than years of empty ones)."""

from dagster import DailyPartitionsDefinition

from resources.settings import Settings

SETTINGS = Settings.from_env()
daily_partitions = DailyPartitionsDefinition(start_date=SETTINGS.start_date, end_date=SETTINGS.end_date, timezone="UTC")
