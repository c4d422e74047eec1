"""Numbers subsystem: inbound numbers (DIDs and their rule chains) and aliases (the
numbers a caller dials that stand for other numbers).
"""
