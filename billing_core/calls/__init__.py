"""Calls subsystem: call processing: callPrepare and callFinish (rating +
ledger), DISA (authorizeCall), the call log, and reconciliation with Asterisk's CDRs.
"""
