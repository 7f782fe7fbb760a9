"""``bitmap-tui serve``: the only client of each configured QEMU's QMP socket, serving each VM as
a multi-client QMP socket (commands in order with their ids kept, events to every client),
with rights by peer credentials and an audit of every change by user. No Textual here."""
