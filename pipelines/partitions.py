"""The daily partitions every dated asset shares: one per landing day, up to yesterday."""

from dagster import DailyPartitionsDefinition

from resources.settings import Settings

daily_partitions = DailyPartitionsDefinition(start_date=Settings.from_env().start_date, timezone="UTC")
