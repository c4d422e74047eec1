"""Ledger subsystem: where money is: accounts, holds, charges, transfers,
currencies and CDR rows, on both stores. It never computes a price.
"""
