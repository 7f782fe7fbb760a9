"""The backup-chain ledger: what was backed up, where, and with which verdict."""
