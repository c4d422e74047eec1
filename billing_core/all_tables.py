"""Every subsystem's tables on the one shared metadata: what Alembic's env and the schema
checks compare the database with. Importing it imports every tables module."""

from billing_core.asterisk import tables as asterisk_tables
from billing_core.db.schema import metadata
from billing_core.directory import tables as directory_tables
from billing_core.ledger import tables as ledger_tables
from billing_core.numbers import tables as numbers_tables
from billing_core.provisioning import tables as provisioning_tables
from billing_core.rating import tables as rating_tables

MODULES = (asterisk_tables, directory_tables, ledger_tables, numbers_tables, provisioning_tables, rating_tables)
__all__ = ["MODULES", "metadata"]
