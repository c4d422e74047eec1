"""Directory subsystem: who exists, who owns what and who may log in:
users, SIP extensions, API keys, profiles (the cached view of all three), ownership, bans and
lock-outs. The lowest subsystem: every other one asks it who the caller is.
"""
