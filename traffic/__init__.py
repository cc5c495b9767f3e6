"""C4 traffic room."""
