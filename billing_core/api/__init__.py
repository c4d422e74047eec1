"""The method registry: every API method defined once, dispatched for every transport."""
