"""The whole method catalogue: importing this module registers every API method, each
defined once in its subsystem's `*_api` module, in billing_core.catalog.registry.REGISTRY."""

from billing_core.asterisk import bans_api, callback_api, live_calls_api, realm_api
from billing_core.asterisk import maintenance_api as asterisk_maintenance_api
from billing_core.calls import call_info_api, calls_api, disa_api, logs_api
from billing_core.ledger import currencies_api
from billing_core.numbers import aliases_api, did_book_api, did_rules_api, dids_api, maintenance_api, pools_api
from billing_core.provisioning import accounts_api, codes_api, extensions_api, keys_api, users_api
from billing_core.rating import routes_api, tariff_admin_api, tariffs_api

MODULES = (
    bans_api, callback_api, live_calls_api, asterisk_maintenance_api, realm_api, call_info_api, calls_api,
    disa_api, logs_api, currencies_api, aliases_api,
    did_rules_api, dids_api, did_book_api, pools_api, maintenance_api, accounts_api, codes_api,
    extensions_api, keys_api, users_api, routes_api, tariffs_api, tariff_admin_api,
)  # fmt: skip
