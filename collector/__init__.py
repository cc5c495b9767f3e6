"""C4 collector room."""
