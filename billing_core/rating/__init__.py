"""Rating subsystem: what a call costs and where it goes: directions,
routes, bill types, tariffs and their entries, and the rating engine. It never moves money.
"""
