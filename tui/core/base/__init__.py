"""Small shared modules every layer of the core may use."""
