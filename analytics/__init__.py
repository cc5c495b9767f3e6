"""C4 analytics room."""
