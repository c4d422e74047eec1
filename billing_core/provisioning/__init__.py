"""Provisioning subsystem: users, accounts and SIP accounts as the API creates,
shows and changes them (registerUser, updateUser, createExtension, getInfo, API keys),
over the directory, the ledger and rating.
"""
