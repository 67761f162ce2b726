"""osstune front-ends: the Typer CLI and the Textual wizard. Never imports torch at module level."""
