"""Backup chains: a durable ledger, policies and their planner, target creation, verification.

Core code: no Textual import anywhere in this package.
"""
