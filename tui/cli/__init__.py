"""The command line: ``bitmap-tui`` opens the console; each subcommand has its own module here.

The modules import only the core and :mod:`tui.session` at the top; Textual is imported only by
the commands that open the console (the default command, ``compose``, ``demo``).
"""
