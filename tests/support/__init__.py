"""What test modules share: they import from here, never from one another or from conftest."""
