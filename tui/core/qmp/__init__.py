"""The QMP layer: addresses, transports, connections and fleets (no Textual)."""
