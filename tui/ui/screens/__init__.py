"""One screen per module: the dashboard, dialogs, help. Other screens push themselves from here."""
