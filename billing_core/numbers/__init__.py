"""Numbers subsystem: inbound numbers: DIDs and their rule chains.
"""
