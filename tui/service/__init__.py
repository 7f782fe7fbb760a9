"""bitmap-tui serve: the service that owns each VM's QMP socket."""
